// Command wfworker is the worker of the workflow fault tests
// (internal/faults/workflow_test.go): forgeq's worker with the built-in
// task types and three test-only ones made for workflows. Each handler
// call of them is one "task done" line of the worker's log, which the
// tests' ledger counts; a delivery the workflow middleware skips logs no
// such line.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// The test-only types; the tests name them by these strings.
const (
	typeMember  = "faultwf:member"
	typeCollect = "faultwf:collect"
	typeAfter   = "faultwf:after"
)

// memberArgs is the payload of faultwf:member: it sleeps SleepMS
// milliseconds (or until its context ends) and returns Index.
type memberArgs struct {
	Index   int `json:"index"`
	SleepMS int `json:"sleep_ms"`
}

// collected is what faultwf:collect returns: the outcomes of its group as
// Results tells them, and what it read of its members' results.
type collected struct {
	Total     int `json:"total"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// Seen counts the members with a result, Distinct the different
	// indexes among them and IndexSum adds them up.
	Seen     int `json:"seen"`
	Distinct int `json:"distinct"`
	IndexSum int `json:"index_sum"`
}

var (
	member = tasks.Define(typeMember, "Test only: sleeps, then returns its index.",
		func(ctx context.Context, _ tasks.Deps, p memberArgs) ([]byte, error) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(p.SleepMS) * time.Millisecond):
			}
			return json.Marshal(p.Index)
		})

	collect = tasks.Define(typeCollect, "Test only: a group's callback, which reads its members' outcomes.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			g, err := workflow.Results(ctx)
			if err != nil {
				return nil, err
			}
			c := collected{Total: g.Total, Succeeded: g.Succeeded, Failed: g.Failed}
			seen := map[int]bool{}
			err = g.Each(ctx, func(_ int, result []byte, failure string) error {
				if failure != "" {
					return nil
				}
				var i int
				if err := json.Unmarshal(result, &i); err != nil {
					return fmt.Errorf("member result %s: %w", result, err)
				}
				c.Seen++
				c.IndexSum += i
				seen[i] = true
				return nil
			})
			if err != nil {
				return nil, err
			}
			c.Distinct = len(seen)
			return json.Marshal(c)
		}).
		TakesPrevious("the outcomes of its group's members")

	after = tasks.Define(typeAfter, "Test only: returns the result of the stage before it.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			return workflow.Previous(ctx)
		}).
		TakesPrevious("any result, returned as it is")
)

func main() {
	worker.New("wfworker").Register(tasks.Builtin()...).Register(member, collect, after).Main()
}
