package workflow_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// The workflow benchmarks run a worker with its defaults and Concurrency
// 50 (as the peer harness, docs/bench/workflows, runs BullMQ and Celery)
// on the real Redis of REDIS_TEST_URL, database benchDB, which they
// flush. Run them with -benchtime 1x and repeat the command to
// interleave:
//
//	for i in 1 2 3 4 5; do
//		go test -run '^$' -bench 'Group|Chain' -benchtime 1x ./workflow
//	done
const (
	benchDB          = 33
	benchMembers     = 10_000
	benchChainSteps  = 100
	benchConcurrency = 50
	benchEnqueuers   = 32 // concurrent enqueuers of the plain tasks, as Submit's
)

// benchClock records, across handlers, when the last member finished and
// when the callback started, in Unix nanoseconds.
type benchClock struct {
	lastMember atomic.Int64
	callback   atomic.Int64
	members    atomic.Int64
}

func (c *benchClock) memberDone() {
	now := time.Now().UnixNano()
	for {
		old := c.lastMember.Load()
		if now <= old || c.lastMember.CompareAndSwap(old, now) {
			break
		}
	}
	c.members.Add(1)
}

type noop struct {
	I int `json:"i"`
}

func benchWorker(b *testing.B, clock *benchClock) (*forgeqtest.Worker, *tasks.Type[noop], *tasks.Type[noop]) {
	member := tasks.Define("bench:member", "No-op member.",
		func(context.Context, tasks.Deps, noop) ([]byte, error) {
			clock.memberDone()
			return nil, nil
		})
	callback := tasks.Define("bench:callback", "No-op callback.",
		func(context.Context, tasks.Deps, noop) ([]byte, error) {
			clock.callback.Store(time.Now().UnixNano())
			return nil, nil
		})
	url := redistest.URL(b, benchDB)
	flush(b, url)
	w := forgeqtest.StartWorker(b, worker.New("wfbench").Register(member, callback), forgeqtest.WorkerOptions{
		Env: map[string]string{
			"REDIS_CONNECTION_URL": url, "REDIS_EMBEDDED": "",
			"WORKER_CONCURRENCY": fmt.Sprint(benchConcurrency), "LOG_LEVEL": "warn",
		},
	})
	return w, member, callback
}

// BenchmarkGroupCallback runs a group of 10,000 no-op members with a
// no-op callback (impl=workflow: from Submit until the callback
// finished), against the same 10,000 tasks enqueued plainly by 32
// concurrent enqueuers, as Submit enqueues them (impl=plain: until the
// last one finished). callback-ms is the time from the last member's end
// to the callback's start; submit-ms the time Submit (or the enqueues)
// took. docs/bench/workflows/run.sh runs it beside BullMQ and Celery.
func BenchmarkGroupCallback(b *testing.B) {
	for _, impl := range []string{"plain", "workflow"} {
		b.Run("impl="+impl, func(b *testing.B) {
			clock := &benchClock{}
			w, member, callback := benchWorker(b, clock)
			ctx := context.Background()
			var total, submit, cbLatency time.Duration
			for range b.N {
				clock.members.Store(0)
				clock.callback.Store(0)
				start := time.Now()
				if impl == "plain" {
					g, gctx := errgroup.WithContext(ctx)
					g.SetLimit(benchEnqueuers)
					for i := range benchMembers {
						g.Go(func() error {
							_, err := member.Enqueue(gctx, w.Client(), noop{I: i})
							return err
						})
					}
					if err := g.Wait(); err != nil {
						b.Fatal(err)
					}
					submit += time.Since(start)
					waitFor(b, func() bool { return clock.members.Load() == benchMembers })
				} else {
					nodes := make([]workflow.Node, benchMembers)
					for i := range nodes {
						nodes[i] = workflow.Task(member, noop{I: i})
					}
					info, err := w.Services().Workflows.Submit(ctx,
						workflow.Group(nodes...).Then(workflow.Task(callback, noop{}), workflow.AllSucceeded), workflow.SubmitOptions{})
					if err != nil {
						b.Fatal(err)
					}
					submit += time.Since(start)
					waitFor(b, func() bool { return clock.callback.Load() != 0 })
					cbLatency += time.Duration(clock.callback.Load() - clock.lastMember.Load())
					// The workflow's state is final once the callback's
					// record is written: the total includes it.
					st, err := w.Services().Workflows.Wait(ctx, info.ID, time.Millisecond, nil)
					if err != nil || st.Status != workflow.StatusSucceeded {
						b.Fatalf("workflow: %+v, %v", st, err)
					}
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "total-ms")
			b.ReportMetric(float64(submit.Milliseconds())/float64(b.N), "submit-ms")
			b.ReportMetric(float64(benchMembers)/total.Seconds()*float64(b.N), "tasks/s")
			if impl == "workflow" {
				b.ReportMetric(float64(cbLatency.Microseconds())/1000/float64(b.N), "callback-ms")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkChain runs a chain of 100 no-op steps (impl=chain; per-step-ms
// is the total over 100) against one plain task's enqueue-to-finish
// latency, taken 100 times one after another (impl=plain).
func BenchmarkChain(b *testing.B) {
	for _, impl := range []string{"plain", "chain"} {
		b.Run("impl="+impl, func(b *testing.B) {
			clock := &benchClock{}
			w, member, _ := benchWorker(b, clock)
			ctx := context.Background()
			var lat []time.Duration
			for range b.N {
				if impl == "plain" {
					for i := range benchChainSteps {
						clock.members.Store(0)
						start := time.Now()
						if _, err := member.Enqueue(ctx, w.Client(), noop{I: i}, asynq.MaxRetry(0)); err != nil {
							b.Fatal(err)
						}
						waitFor(b, func() bool { return clock.members.Load() == 1 })
						lat = append(lat, time.Since(start))
					}
					continue
				}
				steps := make([]workflow.Node, benchChainSteps)
				for i := range steps {
					steps[i] = workflow.Task(member, noop{I: i})
				}
				start := time.Now()
				info, err := w.Services().Workflows.Submit(ctx, workflow.Chain(steps...), workflow.SubmitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				st, err := w.Services().Workflows.Wait(ctx, info.ID, time.Millisecond, nil)
				if err != nil || st.Status != workflow.StatusSucceeded {
					b.Fatalf("workflow: %+v, %v", st, err)
				}
				lat = append(lat, time.Since(start)/benchChainSteps)
			}
			slices.Sort(lat)
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(lat)), "per-step-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func waitFor(b *testing.B, done func() bool) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !done() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(200 * time.Microsecond)
	}
}
