package worker

import (
	"bytes"
	"context"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/workflow"
)

// Entries stored in Redis (package schedule) run beside the program's own:
// the scheduler checks their version every scheduleReload and before every
// tick it enqueues, and reads them again when it changed. A stored entry
// replaces the program's entry of the same name, paused ones included (a
// paused stored entry pauses the program's). Every replica computes the
// same ticks and task ids for an entry, so the once-per-tick guarantee of
// schedule.go holds for them too.
const (
	// scheduleReload is how often the scheduler checks the stored
	// entries' version.
	scheduleReload = time.Second
	// scheduleRebuild is how often the entries are read again while one
	// could not be built (its type not yet in the task catalogue, say).
	scheduleRebuild = 10 * time.Second
)

// live is a scheduler's view of the stored entries.
type live struct {
	store    *schedule.Store
	types    workflow.Types
	maxRetry int

	loaded   bool
	version  int64
	checked  time.Time // last version check
	loadedAt time.Time
	stored   map[string]*liveEntry // by name
	failing  bool                  // the last check failed (logged once)
}

// liveEntry is one stored entry as the scheduler last read it.
type liveEntry struct {
	entry schedule.Entry // as stored, Updated cleared
	p     *periodic      // nil: paused, or refused
	err   string         // why it was refused
}

func newLive(store *schedule.Store, types workflow.Types, maxRetry int) *live {
	return &live{store: store, types: types, maxRetry: maxRetry, stored: make(map[string]*liveEntry)}
}

// refresh reads the stored entries again if their version changed, and
// merges them with the program's. A Redis failure keeps the entries last
// read, with a warning when it begins.
func (s *scheduler) refresh(ctx context.Context, now time.Time) {
	l := s.live
	if l == nil || ctx.Err() != nil {
		return
	}
	l.checked = now
	v, err := l.store.Version(ctx)
	if err == nil && l.loaded && v == l.version && !(l.refused() && now.Sub(l.loadedAt) >= scheduleRebuild) {
		l.ok(s.log)
		return
	}
	var entries []schedule.Entry
	if err == nil {
		entries, v, err = l.store.Entries(ctx)
	}
	if err != nil {
		if !l.failing && ctx.Err() == nil {
			s.log.Warn("stored schedule entries not read; running the ones read before", zap.Error(err))
		}
		l.failing = true
		return
	}
	l.ok(s.log)
	s.apply(ctx, entries, v, now)
}

// ok notes a successful read.
func (l *live) ok(log *zap.Logger) {
	if l.failing {
		log.Info("stored schedule entries read again")
	}
	l.failing = false
}

// refused reports whether an entry could not be built.
func (l *live) refused() bool {
	for _, le := range l.stored {
		if le.err != "" {
			return true
		}
	}
	return false
}

// apply makes entries, of version v, the stored entries s runs.
func (s *scheduler) apply(ctx context.Context, entries []schedule.Entry, v int64, now time.Time) {
	l := s.live
	stored := make(map[string]*liveEntry, len(entries))
	for _, e := range entries {
		e.Updated = time.Time{}
		old, had := l.stored[e.Name]
		if had && old.err == "" && sameEntry(old.entry, e) {
			stored[e.Name] = old
			continue
		}
		le := &liveEntry{entry: e}
		fields := []zap.Field{zap.String("schedule", e.Name), zap.String("spec", e.Spec), zap.String("task_type", e.Type)}
		if !e.Paused {
			p, err := l.build(ctx, e, now)
			if err != nil {
				le.err = err.Error()
				if !had || old.err != le.err {
					s.log.Warn("stored schedule entry refused; it does not run", append(fields, zap.Error(err))...)
				}
			} else {
				le.p = p
			}
		}
		stored[e.Name] = le
		if slices.ContainsFunc(s.static, func(p *periodic) bool { return p.name == e.Name }) {
			fields = append(fields, zap.Bool("replaces_program_entry", true))
		}
		switch {
		case le.err != "":
		case e.Paused && (!had || !old.entry.Paused):
			s.log.Info("schedule entry paused", fields...)
		case e.Paused:
		case !had:
			s.log.Info("schedule entry added", append(fields, zap.String("queue", le.p.queue), zap.Time("next", le.p.next(now)))...)
		default:
			s.log.Info("schedule entry changed", append(fields, zap.String("queue", le.p.queue), zap.Time("next", le.p.next(now)))...)
		}
	}
	for name := range l.stored {
		if _, ok := stored[name]; !ok {
			s.log.Info("schedule entry removed", zap.String("schedule", name))
		}
	}
	l.stored, l.version, l.loaded, l.loadedAt = stored, v, true, now
	s.merge(now)
}

// build checks a stored entry against the program's types and the task
// catalogue and builds its task.
func (l *live) build(ctx context.Context, e schedule.Entry, now time.Time) (*periodic, error) {
	payload := string(e.Payload)
	if len(bytes.TrimSpace(e.Payload)) == 0 {
		payload = "{}"
	}
	ce := config.ScheduleEntry{Name: e.Name, Spec: e.Spec, Type: e.Type, Payload: payload, Queue: e.Queue}
	b, err := l.types.Lookup(ctx, e.Type)
	if err != nil {
		return nil, err
	}
	return buildPeriodic(ce, b, b.NewTask, l.maxRetry, now)
}

// merge sets the entries s runs: the program's, except those a stored
// entry replaces, then the stored ones that run, by name. An entry that
// was already running keeps its next tick; a new or changed one starts at
// its first tick after now.
func (s *scheduler) merge(now time.Time) {
	l := s.live
	var out []*periodic
	for _, p := range s.static {
		if _, replaced := l.stored[p.name]; !replaced {
			out = append(out, p)
		}
	}
	var names []string
	for name, le := range l.stored {
		if le.p != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		out = append(out, l.stored[name].p)
	}
	was := make(map[*periodic]time.Time, len(s.entries))
	for i, e := range s.entries {
		was[e] = s.next[i]
	}
	next := make([]time.Time, len(out))
	changed := len(out) != len(s.entries)
	for i, e := range out {
		t, ok := was[e]
		if !ok {
			t = e.next(now)
			changed = true
		}
		next[i] = t
	}
	s.entries, s.next = out, next
	if changed && s.board != nil {
		s.board.changed = true
	}
}

// sameEntry reports whether two stored entries define the same schedule.
func sameEntry(a, b schedule.Entry) bool {
	return a.Name == b.Name && a.Spec == b.Spec && a.Type == b.Type && a.Queue == b.Queue &&
		a.Paused == b.Paused && bytes.Equal(a.Payload, b.Payload)
}
