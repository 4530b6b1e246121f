package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// scheduleFlags are the flags of the entries stored in Redis (package
// schedule).
type scheduleFlags struct {
	put    string // --schedule-put: JSON, @FILE or -
	pause  string // --schedule-pause NAME
	resume string // --schedule-resume NAME
	remove string // --schedule-remove NAME
	list   bool   // --schedule-list
}

// maxScheduleEntrySize bounds the JSON of --schedule-put: a payload and
// the entry's other fields.
const maxScheduleEntrySize = tasks.MaxPayloadSize + 16<<10

// scheduleFlagNames are the schedule flags, each a mode of its own.
var scheduleFlagNames = []string{"schedule-put", "schedule-pause", "schedule-resume", "schedule-remove", "schedule-list"}

// registerScheduleFlags adds the schedule flags to fs.
func (c *cli) registerScheduleFlags(fs *pflag.FlagSet) {
	f := &c.f.sched
	fs.StringVar(&f.put, "schedule-put", "", "add or replace the periodic entry `JSON` {name, spec, type, payload, queue, paused} in Redis (@FILE reads a file, - stdin); every worker runs it within a second")
	fs.StringVar(&f.pause, "schedule-pause", "", "pause the periodic entry `NAME` stored in Redis")
	fs.StringVar(&f.resume, "schedule-resume", "", "resume the periodic entry `NAME` stored in Redis")
	fs.StringVar(&f.remove, "schedule-remove", "", "remove the periodic entry `NAME` from Redis")
	fs.BoolVar(&f.list, "schedule-list", false, "list the periodic entries stored in Redis, with their next and previous ticks")
}

// scheduleMode returns the schedule flag given ("--schedule-put", ...),
// or "" when none is.
func scheduleMode(fs *pflag.FlagSet) string {
	for _, n := range scheduleFlagNames {
		if fs.Changed(n) {
			return "--" + n
		}
	}
	return ""
}

// checkSchedule rejects what does not go with the schedule flag mode;
// only is checkCombinations' check that no other flag is given.
func (c *cli) checkSchedule(mode string, only func(string, ...string) error) error {
	f := &c.f.sched
	if len(c.f.args) > 0 {
		return badInput("%s takes no other arguments, got %q", mode, c.f.args)
	}
	switch mode {
	case "--schedule-put":
		if f.put == "" || f.put == "@" {
			return badInput("--schedule-put %q: want the entry's JSON, @FILE or - for stdin", f.put)
		}
	case "--schedule-pause", "--schedule-resume", "--schedule-remove":
		name := map[string]string{"--schedule-pause": f.pause, "--schedule-resume": f.resume, "--schedule-remove": f.remove}[mode]
		if name == "" {
			return badInput("%s needs an entry NAME", mode)
		}
	}
	return only(mode, mode[2:])
}

// schedule runs the schedule flag mode.
func (c *cli) schedule(ctx context.Context, fs *pflag.FlagSet, mode string) error {
	var e schedule.Entry
	if mode == "--schedule-put" {
		data, from, err := c.scheduleDoc()
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return badInput("--schedule-put (%s): %v; want an object with name, spec, type, payload, queue and paused", from, err)
		}
		if !e.Updated.IsZero() {
			return badInput("--schedule-put (%s): \"updated\" is set by the store, not given", from)
		}
	}
	cfg, err := c.loadConfig(fs)
	if err != nil {
		return err
	}
	k, err := c.connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer k.close()
	st := schedule.NewStore(k.m.Client(), workflow.CatalogTypes(c.reg, tasks.NewCatalog(k.m.Client())))
	f := &c.f.sched
	esc := termtext.Escape
	switch mode {
	case "--schedule-list":
		list, err := st.List(ctx)
		if err != nil {
			return fmt.Errorf("--schedule-list: %w", err)
		}
		if c.f.json {
			writeJSON(c.stdout, struct {
				Schedules []schedule.Info `json:"schedules"`
			}{list})
			return nil
		}
		return c.printSchedules(list)
	case "--schedule-put":
		stored, created, err := st.Put(ctx, e)
		if errors.Is(err, schedule.ErrInvalid) {
			return badInput("--schedule-put: %s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), schedule.ErrInvalid.Error()+": "), "tasks: "))
		}
		if err != nil {
			return fmt.Errorf("--schedule-put: %w", err)
		}
		if c.f.json {
			writeJSON(c.stdout, struct {
				schedule.Entry
				Created bool `json:"created"`
			}{stored, created})
			return nil
		}
		verb := "replaced"
		if created {
			verb = "added"
		}
		state := ""
		if stored.Paused {
			state = " (paused)"
		}
		fmt.Fprintf(c.stdout, "%s schedule entry %s: %s %s%s\n", verb, esc(stored.Name), esc(stored.Spec), esc(stored.Type), state)
		return nil
	case "--schedule-remove":
		err := st.Remove(ctx, f.remove)
		if errors.Is(err, schedule.ErrNotFound) {
			return badInput("--schedule-remove %q: no such entry in Redis", f.remove)
		}
		if err != nil {
			return fmt.Errorf("--schedule-remove: %w", err)
		}
		if c.f.json {
			writeJSON(c.stdout, struct {
				Removed string `json:"removed"`
			}{f.remove})
			return nil
		}
		fmt.Fprintf(c.stdout, "removed schedule entry %s\n", esc(f.remove))
		return nil
	}
	name, verb, op := f.pause, "paused", st.Pause
	if mode == "--schedule-resume" {
		name, verb, op = f.resume, "resumed", st.Resume
	}
	stored, err := op(ctx, name)
	if errors.Is(err, schedule.ErrNotFound) {
		return badInput("%s %q: no such entry in Redis", mode, name)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", mode, err)
	}
	if c.f.json {
		writeJSON(c.stdout, stored)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s schedule entry %s\n", verb, esc(stored.Name))
	return nil
}

// printSchedules prints the stored entries as a table.
func (c *cli) printSchedules(list []schedule.Info) error {
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no periodic entries stored in Redis")
		return nil
	}
	esc := termtext.Escape
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSPEC\tTYPE\tQUEUE\tSTATE\tNEXT\tPREV")
	for _, in := range list {
		state, queue := "active", in.Queue
		if in.Paused {
			state = "paused"
		}
		if queue == "" {
			queue = "(type's)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(in.Name), esc(in.Spec), esc(in.Type), esc(queue), state, at(in.Next), at(in.Prev))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("--schedule-list: %w", err)
	}
	return nil
}

// scheduleDoc reads the JSON of --schedule-put: the argument, @FILE or
// stdin, and where it came from.
func (c *cli) scheduleDoc() ([]byte, string, error) {
	return c.jsonArg("--schedule-put", c.f.sched.put, maxScheduleEntrySize, "an entry")
}
