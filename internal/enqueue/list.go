package enqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
)

// typeJSON is --list --json's description of a task type.
type typeJSON struct {
	Type        string        `json:"type"`
	Description string        `json:"description"`
	Queue       string        `json:"queue"`
	Fields      []tasks.Field `json:"fields"`
	// TakesPrevious says what the type reads, as a workflow step, as the
	// result of the stage before it; empty when it reads none.
	TakesPrevious string `json:"takes_previous,omitempty"`
	// Local is true for the program's own types, false for types only a
	// worker published.
	Local bool `json:"local"`
	// Published is true when the type is in the task catalogue.
	Published bool `json:"published"`
	// Workers serve the type, most recently seen first (published types).
	Workers []workerJSON `json:"workers,omitempty"`
	// Schema is the payload's JSON Schema: the program's own, or as a
	// worker published it.
	Schema json.RawMessage `json:"schema,omitempty"`
}

// workerJSON is a worker serving a published type.
type workerJSON struct {
	ID       string    `json:"id"`
	LastSeen time.Time `json:"last_seen"`
}

// list prints the program's task types and the published ones with their
// payload fields and, for published types, the workers serving them. When
// the catalogue cannot be read it warns and lists the program's types.
func (c *cli) list(ctx context.Context, fs *pflag.FlagSet) error {
	defs := c.reg.Definitions()
	cat, err := c.listCatalog(ctx, fs)
	if err != nil {
		if len(defs) == 0 {
			return fmt.Errorf("this program has no task types of its own, and the task catalogue cannot be read: %w", err)
		}
		fmt.Fprintf(c.stderr, "%s: warning: the task catalogue could not be read, so only this program's types are listed: %v\n", c.prog, err)
		cat = &catalogListing{}
	}
	now := c.now()
	if c.f.json {
		out := make([]typeJSON, 0, len(defs)+len(cat.extra))
		for _, d := range defs {
			p, published := cat.all[d.Type()]
			out = append(out, typeJSON{
				Type: d.Type(), Description: d.Description(), Queue: d.Queue(), Fields: nonNil(d.Fields()),
				TakesPrevious: d.TakesPrevious(), Local: true, Published: published, Workers: workersJSON(p.Workers), Schema: d.Schema(),
			})
		}
		for _, p := range cat.extra {
			out = append(out, typeJSON{
				Type: p.Type, Description: p.Description, Queue: p.Queue, Fields: nonNil(p.Fields()),
				TakesPrevious: p.TakesPrevious, Published: true, Workers: workersJSON(p.Workers), Schema: p.Schema,
			})
		}
		writeJSON(c.stdout, out)
		return nil
	}
	first := true
	for _, d := range defs {
		p, published := cat.all[d.Type()]
		if err := c.listType(c.stdout, &first, d.Type(), d.Queue(), d.Description(), "", d.TakesPrevious(), d.Fields()); err != nil {
			return err
		}
		if published {
			listWorkers(c.stdout, p.Workers, now)
		}
	}
	for _, p := range cat.extra {
		if err := c.listType(c.stdout, &first, p.Type, p.Queue, p.Description, ", published by a worker", p.TakesPrevious, p.Fields()); err != nil {
			return err
		}
		listWorkers(c.stdout, p.Workers, now)
	}
	return nil
}

// listType prints one type with its fields and, when it takes one, what
// it reads as the previous result of a workflow; first is true until the
// first type is printed.
func (c *cli) listType(w io.Writer, first *bool, typ, queue, description, origin, previous string, fields []tasks.Field) error {
	if !*first {
		fmt.Fprintln(w)
	}
	*first = false
	esc := termtext.Escape
	fmt.Fprintf(w, "%s (queue %s%s)\n  %s\n", esc(typ), esc(queue), origin, esc(description))
	if previous != "" {
		fmt.Fprintf(w, "  takes previous result: %s\n", esc(previous))
	}
	if len(fields) == 0 {
		fmt.Fprintln(w, "  payload: none")
		return nil
	}
	fmt.Fprintln(w, "  payload fields:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		req := "optional"
		if f.Required {
			req = "required"
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", esc(f.Name), esc(f.Type), req, esc(f.Help))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	return nil
}

// listWorkers prints the workers serving a published type.
func listWorkers(w io.Writer, workers []tasks.WorkerSeen, now time.Time) {
	if len(workers) == 0 {
		fmt.Fprintln(w, "  workers: none running (published earlier)")
		return
	}
	seen := make([]string, len(workers))
	for i, ws := range workers {
		seen[i] = fmt.Sprintf("worker %s, seen %s", termtext.Escape(ws.ID), seenAgo(now, ws.LastSeen))
	}
	fmt.Fprintf(w, "  served by: %s\n", strings.Join(seen, "; "))
}

// workersJSON converts workers for --json; nil for none.
func workersJSON(workers []tasks.WorkerSeen) []workerJSON {
	if len(workers) == 0 {
		return nil
	}
	out := make([]workerJSON, len(workers))
	for i, w := range workers {
		out[i] = workerJSON{ID: w.ID, LastSeen: w.LastSeen}
	}
	return out
}

// nonNil returns fields, or an empty slice for none, so that JSON shows [].
func nonNil(fields []tasks.Field) []tasks.Field {
	if fields == nil {
		return []tasks.Field{}
	}
	return fields
}
