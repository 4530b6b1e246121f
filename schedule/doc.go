// Package schedule stores periodic entries in Redis, where they can be
// added, changed, paused and removed while the workers run: from Go (a
// [Store]), from the enqueue command (--schedule-put, --schedule-pause,
// ...) and over HTTP (/api/schedules). Every worker's scheduler reads
// them about once a second and runs them beside the program's own
// entries (worker.App.Schedule and WORKER_SCHEDULE).
//
// # Entries
//
// An [Entry] has the fields of a WORKER_SCHEDULE entry (name, spec, type,
// payload, queue) and a paused flag. [Store.Put] checks it exactly as the
// worker checks WORKER_SCHEDULE at start: the name, spec and queue as
// config.ParseScheduleEntry does, the type against the program's types
// and the task catalogue, the payload against the type. A refused entry
// is an error wrapping [ErrInvalid], and nothing is written.
//
// # Name clashes
//
// An entry stored here replaces the program's own entry of the same name
// on every worker, for as long as it is stored: put one with the same name
// to change a code entry at run time, or with Paused set to pause it;
// remove it to go back to the program's.
//
// # Once per tick
//
// The worker enqueues each tick of an entry with the task id
// "sched:<name>:<tick in Unix seconds>", so however many workers run the
// schedule, one enqueue per tick succeeds. A worker re-reads the entries
// before every tick it enqueues when they have changed, so a pause or a
// removal takes effect on every worker at once (within one Redis round
// trip), and an added entry ticks within about a second.
//
// # Redis layout
//
// The entries are the fields of one hash, [Key]: field the entry's name,
// value its JSON ({"name","spec","type","payload","queue","paused",
// "updated"}); the field [VersionField] counts the changes. One hash keeps
// every change a single-key transaction, on a cluster too.
package schedule
