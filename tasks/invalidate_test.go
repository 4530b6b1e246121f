package tasks_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/tasks"
)

func TestInvalidate(t *testing.T) {
	t.Parallel()
	many := make([]string, 2500) // more than one Delete batch
	for i := range many {
		many[i] = fmt.Sprintf("bulk:%d", i)
	}
	tests := []struct {
		name     string
		giveKeys []string // cache keys before the task
		give     tasks.Invalidate
		wantKeys []string // cache keys after, sorted
	}{
		{
			name:     "keys",
			giveKeys: []string{"a", "b", "c"},
			give:     tasks.Invalidate{Keys: []string{"a", "c", "missing"}},
			wantKeys: []string{"b"},
		},
		{
			name:     "keys in batches",
			giveKeys: append([]string{"keep"}, many...),
			give:     tasks.Invalidate{Keys: many},
			wantKeys: []string{"keep"},
		},
		{
			name:     "pattern",
			giveKeys: []string{"user:1", "user:2", "users", "order:1"},
			give:     tasks.Invalidate{Pattern: "user:*"},
			wantKeys: []string{"order:1", "users"},
		},
		{
			name:     "pattern matching nothing",
			giveKeys: []string{"a"},
			give:     tasks.Invalidate{Pattern: "nothing:*"},
			wantKeys: []string{"a"},
		},
		{
			name:     "everything",
			giveKeys: []string{"a", "b"},
			give:     tasks.Invalidate{Pattern: "*"},
			wantKeys: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUnit(t)
			ctx := context.Background()
			for _, k := range tt.giveKeys {
				if err := b.m.Set(ctx, k, "v", 0); err != nil {
					t.Fatal(err)
				}
			}
			// asynq's keys share the server and are never the cache's.
			b.mr.Set("asynq:{default}:pending", "queue")
			task, err := tasks.NewInvalidateTask(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.handler(t, tasks.TypeInvalidate).ProcessTask(ctx, task); err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, k := range b.mr.Keys() {
				if k != "asynq:{default}:pending" {
					got = append(got, k[len(b.m.KeyPrefix()):])
				}
			}
			slices.Sort(got)
			if diff := cmp.Diff(tt.wantKeys, got); diff != "" {
				t.Errorf("cache keys after the task (-want +got):\n%s", diff)
			}
			if !b.mr.Exists("asynq:{default}:pending") {
				t.Errorf("invalidation deleted asynq's key")
			}
		})
	}
}
