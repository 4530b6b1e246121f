package enqueue

import (
	"fmt"
	"text/tabwriter"

	"github.com/forgeq/forgeq/tasks"
)

// typeJSON is --list --json's description of a task type.
type typeJSON struct {
	Type        string        `json:"type"`
	Description string        `json:"description"`
	Queue       string        `json:"queue"`
	Fields      []tasks.Field `json:"fields"`
}

// list prints the task types with their payload fields. It needs no Redis.
func (c *cli) list() error {
	defs := c.reg.Definitions()
	if c.f.json {
		out := make([]typeJSON, 0, len(defs))
		for _, d := range defs {
			fields := d.Fields()
			if fields == nil {
				fields = []tasks.Field{}
			}
			out = append(out, typeJSON{d.Type(), d.Description(), d.Queue(), fields})
		}
		writeJSON(c.stdout, out)
		return nil
	}
	for i, d := range defs {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		fmt.Fprintf(c.stdout, "%s (queue %s)\n  %s\n", d.Type(), d.Queue(), d.Description())
		fields := d.Fields()
		if len(fields) == 0 {
			fmt.Fprintln(c.stdout, "  payload: none")
			continue
		}
		fmt.Fprintln(c.stdout, "  payload fields:")
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		for _, f := range fields {
			req := "optional"
			if f.Required {
				req = "required"
			}
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", f.Name, f.Type, req, f.Help)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("list: %w", err)
		}
	}
	return nil
}
