package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

func TestWarm(t *testing.T) {
	t.Parallel()
	many := make([]string, 350)
	for i := range many {
		many[i] = fmt.Sprintf("item:%d", i)
	}
	tests := []struct {
		name             string
		giveCached       []string // keys cached before the task, with their digest
		give             tasks.Warm
		wantComputations uint64
		wantTTL          time.Duration
	}{
		{
			name:             "cold",
			give:             tasks.Warm{Keys: []string{"a", "b", "c"}, Work: 100},
			wantComputations: 3,
			wantTTL:          cachemgr.DefaultTTL,
		},
		{
			name:             "partly cached, with repeats",
			giveCached:       []string{"b"},
			give:             tasks.Warm{Keys: []string{"a", "b", "a", "c"}, Work: 100},
			wantComputations: 2,
			wantTTL:          cachemgr.DefaultTTL,
		},
		{
			name:             "many keys with a TTL",
			give:             tasks.Warm{Keys: many, Work: 10, TTLSeconds: 120},
			wantComputations: uint64(len(many)),
			wantTTL:          2 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUnit(t)
			ctx := context.Background()
			for _, k := range tt.giveCached {
				if err := b.m.Set(ctx, k, tasks.Digest(k, tt.give.Work), 0); err != nil {
					t.Fatal(err)
				}
			}
			task, err := tasks.NewWarmTask(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.handler(t, tasks.TypeWarm).ProcessTask(ctx, task); err != nil {
				t.Fatal(err)
			}
			if got := b.m.Stats().Computations; got != tt.wantComputations {
				t.Errorf("computations = %d, want %d", got, tt.wantComputations)
			}
			for _, k := range tt.give.Keys {
				got, err := b.m.Get(ctx, k)
				if err != nil {
					t.Fatalf("Get(%q): %v", k, err)
				}
				if got != tasks.Digest(k, tt.give.Work) {
					t.Errorf("Get(%q) = %q, want Digest(%q, %d)", k, got, k, tt.give.Work)
				}
			}
			if tt.giveCached == nil {
				k := tt.give.Keys[0]
				if diff := cmp.Diff(tt.wantTTL, b.mr.TTL(b.m.Key(k))); diff != "" {
					t.Errorf("TTL of %q (-want +got):\n%s", k, diff)
				}
			}
		})
	}
}

// A cancelled warm task returns the ctx's error, not a partial success.
func TestWarmStopsOnCancel(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	task, err := tasks.NewWarmTask(tasks.Warm{Keys: keys, Work: tasks.MaxWarmWork})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = b.handler(t, tasks.TypeWarm).ProcessTask(ctx, task)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("error %v, want a retryable one wrapping context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("handler returned %v after cancellation, want promptly", took)
	}
}
