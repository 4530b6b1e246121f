package enqueue

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// TestWorkflowWaitWithoutEvents runs the steps of workflows on a server
// that publishes no task events and follows them as --workflow --wait
// does, with a state check of once an hour: with events off in the
// command's settings (WORKER_EVENTS=false) it polls, and with events on
// but no event stream for the step's queue when the wait begins, it reads
// the state as often as polling. Each step holds until the wait has read
// the workflow's state once, so only a later read sees the workflow end.
func TestWorkflowWaitWithoutEvents(t *testing.T) {
	tb := setup(t, dbWorkflowNoEvents)
	var (
		mu   sync.Mutex
		seen = make(map[string]chan struct{}) // by workflow id: closed once the wait read its state
	)
	seenChan := func(id string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if seen[id] == nil {
			seen[id] = make(chan struct{})
		}
		return seen[id]
	}
	step := tasks.Define("test:wfhold", "Holds until the wait has read its workflow's state.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			id, _, _ := workflow.Current(ctx)
			select {
			case <-seenChan(id):
				return nil, nil
			case <-time.After(20 * time.Second):
				return nil, fmt.Errorf("workflow %s: no read of its state within 20s: %w", id, asynq.SkipRetry)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}, asynq.MaxRetry(0))
	reg, err := tasks.NewRegistry(step)
	if err != nil {
		t.Fatal(err)
	}
	startWorkflowServer(t, tb.url, reg)

	tests := []struct {
		name       string
		giveEnv    map[string]string
		giveStream bool // the step's queue has an event stream when the wait begins
	}{
		{name: "events off", giveEnv: map[string]string{"WORKER_EVENTS": "false"}, giveStream: true},
		{name: "no event stream", giveStream: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"REDIS_CONNECTION_URL": tb.url}
			maps.Copy(env, tt.giveEnv)
			c, k := waitConn(t, env, &syncBuffer{})
			stream := events.StreamKey(silentQueue)
			if err := tb.rdb.Del(context.Background(), stream).Err(); err != nil {
				t.Fatal(err)
			}
			if tt.giveStream {
				if err := tb.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{"k", "progress", "i", "other"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			wc := workflow.NewClient(k.m.Client(), workflow.Options{Types: workflow.RegistryTypes(reg)})
			info, err := wc.Submit(context.Background(), workflow.Task(step, struct{}{}, asynq.Queue(silentQueue)), workflow.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			st, err := c.followWorkflow(ctx, stepEvents(k), wc, info.ID, func(*workflow.State) {
				once.Do(func() { close(seenChan(info.ID)) })
			})
			if err != nil {
				t.Fatalf("follow workflow %s: %v (last state %+v)", info.ID, err, st)
			}
			if st.Status != workflow.StatusSucceeded {
				t.Errorf("workflow %s ended %s (%s), want succeeded", info.ID, st.Status, st.Error)
			}
		})
	}
}

// startWorkflowServer runs the handlers of reg, as workflow steps, on an
// asynq server for silentQueue on url that publishes no task events.
func startWorkflowServer(tb testing.TB, url string, reg *tasks.Registry) {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	log := zaptest.NewLogger(tb)
	mux := tasks.NewMux(reg, tasks.Deps{Cache: m, Logger: log})
	mux.Use(workflow.NewClient(m.Client(), workflow.Options{Logger: log}).Middleware())
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       2,
		Queues:            map[string]int{silentQueue: 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   time.Second,
		Logger:            log.Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	waitServed(tb, m, silentQueue)
}
