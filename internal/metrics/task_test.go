package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
)

func TestTaskMiddleware(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		giveCtx     func(context.Context) context.Context // default: as is
		giveHandler func(context.Context, *asynq.Task) error
		wantErr     string // "" for success
		wantSkip    bool   // errors.Is(err, asynq.SkipRetry)
		wantOutcome string // "" for no failure
	}{
		{
			name:        "success",
			giveHandler: func(context.Context, *asynq.Task) error { return nil },
		},
		{
			name:        "transient failure",
			giveHandler: func(context.Context, *asynq.Task) error { return errors.New("upstream down") },
			wantErr:     "upstream down",
			wantOutcome: "retry",
		},
		{
			name: "permanent failure",
			giveHandler: func(_ context.Context, t *asynq.Task) error {
				return fmt.Errorf("decode %s: bad json: %w", t.Type(), asynq.SkipRetry)
			},
			wantErr:     "decode test:task: bad json",
			wantSkip:    true,
			wantOutcome: "skip_retry",
		},
		{
			name:        "panic",
			giveHandler: func(context.Context, *asynq.Task) error { panic("nil map") },
			wantErr:     "test:task: handler panic: nil map",
			wantOutcome: "panic",
		},
		{
			name:        "interrupted by shutdown",
			giveCtx:     cancelled,
			giveHandler: func(ctx context.Context, _ *asynq.Task) error { return ctx.Err() },
			wantErr:     "context canceled",
			wantOutcome: "canceled",
		},
		{
			name:        "cancelled (package control)",
			giveHandler: func(context.Context, *asynq.Task) error { return &tasks.CancelledError{By: "alice"} },
			wantErr:     "cancelled by alice",
			wantSkip:    true,
			wantOutcome: "cancelled",
		},
		{
			name:        "returned nil after shutdown began",
			giveCtx:     cancelled,
			giveHandler: func(context.Context, *asynq.Task) error { return nil },
			wantOutcome: "canceled",
		},
		{
			name: "returned nil after its timeout",
			giveCtx: func(ctx context.Context) context.Context {
				ctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
				_ = cancel // expired already
				return ctx
			},
			giveHandler: func(context.Context, *asynq.Task) error { return nil },
			wantOutcome: "retry",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, metrics.Options{})
			var running map[string]float64
			h := b.x.TaskMiddleware()(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
				running = samples(t, b.x.Registry(), "forgeq_tasks_in_progress")
				return tt.giveHandler(ctx, task)
			}))

			ctx := t.Context()
			if tt.giveCtx != nil {
				ctx = tt.giveCtx(ctx)
			}
			err := h.ProcessTask(ctx, asynq.NewTask("test:task", []byte(`{}`)))

			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ProcessTask() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr && !errors.Is(err, asynq.SkipRetry)):
				t.Fatalf("ProcessTask() = %v, want %q", err, tt.wantErr)
			}
			if got := errors.Is(err, asynq.SkipRetry); got != tt.wantSkip {
				t.Errorf("errors.Is(err, SkipRetry) = %v, want %v", got, tt.wantSkip)
			}
			if diff := cmp.Diff(map[string]float64{`forgeq_tasks_in_progress{task_type="test:task"}`: 1}, running); diff != "" {
				t.Errorf("in progress while running (-want +got):\n%s", diff)
			}

			want := map[string]float64{
				`forgeq_tasks_processed_total{queue="unknown",task_type="test:task"}`:       1,
				`forgeq_tasks_in_progress{task_type="test:task"}`:                           0,
				`forgeq_task_duration_seconds_count{queue="unknown",task_type="test:task"}`: 1,
			}
			if tt.wantOutcome != "" {
				want[`forgeq_tasks_failed_total{outcome="`+tt.wantOutcome+`",queue="unknown",task_type="test:task"}`] = 1
			}
			got := samples(t, b.x.Registry(), "forgeq_tasks_processed_total", "forgeq_tasks_failed_total",
				"forgeq_tasks_in_progress", "forgeq_task_duration_seconds")
			delete(got, `forgeq_task_duration_seconds_sum{queue="unknown",task_type="test:task"}`)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("task metrics (-want +got):\n%s", diff)
			}
		})
	}
}

func cancelled(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	return ctx
}

func TestTaskMiddlewareSharesCounters(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	ok := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })
	// Two middlewares from one Metrics (say, two muxes) count together.
	for _, typ := range []string{"a:x", "a:x", "b:y"} {
		b.x.TaskMiddleware()(ok).ProcessTask(t.Context(), asynq.NewTask(typ, nil))
	}
	got := samples(t, b.x.Registry(), "forgeq_tasks_processed_total")
	want := map[string]float64{
		`forgeq_tasks_processed_total{queue="unknown",task_type="a:x"}`: 2,
		`forgeq_tasks_processed_total{queue="unknown",task_type="b:y"}`: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("processed (-want +got):\n%s", diff)
	}
}

// TestTaskSeriesFromStart checks that the series of Options.TaskTypes and
// Options.Queues are scraped with zero values before any task, so that
// rate() works from the start, and that a task then counts in them.
func TestTaskSeriesFromStart(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{
		TaskTypes: []string{"report:build", "mail:send", "report:build"}, // a repeat is harmless
		Queues:    []string{"default", "critical"},
	})

	want := map[string]float64{}
	for _, typ := range []string{"report:build", "mail:send"} {
		want[fmt.Sprintf("forgeq_tasks_in_progress{task_type=%q}", typ)] = 0
		for _, q := range []string{"default", "critical"} {
			labels := fmt.Sprintf("{queue=%q,task_type=%q}", q, typ)
			want["forgeq_tasks_processed_total"+labels] = 0
			want["forgeq_tasks_recovered_total"+labels] = 0
			want["forgeq_tasks_cancel_ignored_total"+labels] = 0
			want["forgeq_task_duration_seconds_count"+labels] = 0
			want["forgeq_task_duration_seconds_sum"+labels] = 0
			for _, outcome := range []string{"retry", "archived", "skip_retry", "canceled", "cancelled", "panic"} {
				want[fmt.Sprintf("forgeq_tasks_failed_total{outcome=%q,queue=%q,task_type=%q}", outcome, q, typ)] = 0
			}
		}
	}
	names := []string{"forgeq_tasks_processed_total", "forgeq_tasks_failed_total", "forgeq_tasks_in_progress", "forgeq_task_duration_seconds",
		"forgeq_tasks_recovered_total", "forgeq_tasks_cancel_ignored_total"}
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), names...)); diff != "" {
		t.Errorf("task series before any task (-want +got):\n%s", diff)
	}

	// A task of a type met at run time gets its series as before; the
	// pre-created ones stay.
	fail := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return errors.New("down") })
	b.x.TaskMiddleware()(fail).ProcessTask(t.Context(), asynq.NewTask("other:type", nil))
	for k, v := range map[string]float64{
		`forgeq_tasks_processed_total{queue="unknown",task_type="other:type"}`:              1,
		`forgeq_tasks_failed_total{outcome="retry",queue="unknown",task_type="other:type"}`: 1,
		`forgeq_tasks_in_progress{task_type="other:type"}`:                                  0,
		`forgeq_task_duration_seconds_count{queue="unknown",task_type="other:type"}`:        1,
	} {
		want[k] = v
	}
	got := samples(t, b.x.Registry(), names...)
	delete(got, `forgeq_task_duration_seconds_sum{queue="unknown",task_type="other:type"}`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("task series after a task (-want +got):\n%s", diff)
	}
}

// TestCountRecovered checks that each recovery counts once, under its type
// and queue, and that an empty queue is "unknown" as for the other task
// series.
func TestCountRecovered(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{TaskTypes: []string{"a:x"}, Queues: []string{"default"}})
	b.x.CountRecovered("a:x", "default")
	b.x.CountRecovered("a:x", "default")
	b.x.CountRecovered("b:y", "")
	want := map[string]float64{
		`forgeq_tasks_recovered_total{queue="default",task_type="a:x"}`: 2,
		`forgeq_tasks_recovered_total{queue="unknown",task_type="b:y"}`: 1,
	}
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), "forgeq_tasks_recovered_total")); diff != "" {
		t.Errorf("forgeq_tasks_recovered_total (-want +got):\n%s", diff)
	}
}
