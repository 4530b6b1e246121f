package workflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// Count is the payload of the example's fan-out member.
type Count struct {
	Word string `json:"word"`
}

// A fan-out with a summary callback, then a step that reads the summary:
// Chain(Group(members...).Then(callback), next). The program runs a
// worker on an in-memory Redis, submits the workflow once the worker has
// started, waits for it and prints the last step's result.
func Example() {
	count := tasks.Define("words:count", "Counts the letters of a word.",
		func(ctx context.Context, _ tasks.Deps, p Count) ([]byte, error) {
			return json.Marshal(len(p.Word))
		})
	// The callback reads its members' results with Results.
	total := tasks.Define("words:total", "Adds the counts of its group.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			g, err := workflow.Results(ctx)
			if err != nil {
				return nil, err
			}
			sum := 0
			err = g.Each(ctx, func(_ int, result []byte, failure string) error {
				var n int
				if failure == "" {
					err = json.Unmarshal(result, &n)
				}
				sum += n
				return err
			})
			return json.Marshal(sum)
		}).TakesPrevious("the letter counts of the group's members")
	// The next step takes the total with PreviousAs.
	report := tasks.Define("words:report", "Reports the total.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			n, err := workflow.PreviousAs[int](ctx)
			if err != nil {
				return nil, err
			}
			return fmt.Appendf(nil, "%q", fmt.Sprintf("%d letters", n)), nil
		}).TakesPrevious("the total, a number")

	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app := worker.New("words").Register(count, total, report)
	app.Run(ctx, []string{"--redis-url", "redis://" + mr.Addr(), "--http-addr", "off"}, worker.Env{
		Getenv: func(string) string { return "" },
		Stderr: io.Discard,
		Started: func(s worker.Started) {
			go func() {
				defer cancel()
				flow := workflow.Chain(
					workflow.Group(
						workflow.Task(count, Count{Word: "fan"}),
						workflow.Task(count, Count{Word: "out"}),
						workflow.Task(count, Count{Word: "in"}),
					).Then(workflow.Task(total, struct{}{}), workflow.AllSucceeded),
					workflow.Task(report, struct{}{}),
				)
				info, err := s.Workflows.Submit(ctx, flow, workflow.SubmitOptions{Name: "letters"})
				if err != nil {
					fmt.Println(err)
					return
				}
				fmt.Println("steps:", info.Total)
				st, err := s.Workflows.Wait(ctx, info.ID, 0, nil)
				if err != nil {
					fmt.Println(err)
					return
				}
				fmt.Println(st.Status, st.Done, "of", st.Total)
				last, _ := s.Workflows.Result(ctx, info.ID, "1")
				fmt.Println(string(last))
			}()
		},
	})

	// Output:
	// steps: 5
	// succeeded 5 of 5
	// "8 letters"
}

// Parse reads the JSON form the enqueue command and POST /api/workflows
// take; Submit checks every step against the task types and refuses the
// whole workflow, naming the step, when one is wrong. Nothing is written.
func ExampleParse() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	reg, err := tasks.NewRegistry(tasks.DataProcess, tasks.CacheInvalidate)
	if err != nil {
		log.Fatal(err)
	}
	c := workflow.NewClient(rdb, workflow.Options{Types: workflow.RegistryTypes(reg)})

	root, opts, err := workflow.Parse([]byte(`{"id": "refresh-1", "workflow": {"chain": [
		{"group": [
			{"type": "data:process", "payload": {"key": "user:1", "work": 1000}},
			{"type": "data:process", "payload": {"key": "user:2", "work": -1}}
		]},
		{"type": "cache:invalidate", "payload": {"keys": ["summary"]}}
	]}}`))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Submit(context.Background(), root, opts)
	fmt.Println(err)
	fmt.Println("keys written:", len(mr.Keys()))

	// Output:
	// workflow: step 0.m1 (data:process): invalid payload: data:process: field "work": -1 is out of range [1, 50000000]
	// keys written: 0
}

// A handler that takes the previous stage's result is tested alone with
// WithPrevious.
func ExampleWithPrevious() {
	ctx := workflow.WithPrevious(context.Background(), []byte(`{"rows": 42}`))
	type rows struct {
		Rows int `json:"rows"`
	}
	prev, err := workflow.PreviousAs[rows](ctx)
	fmt.Println(prev.Rows, err)

	// Output:
	// 42 <nil>
}
