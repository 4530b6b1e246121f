package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
)

// A duplicate type name would leave the default registry empty.
func TestDefault(t *testing.T) {
	t.Parallel()
	reg := tasks.Default()
	want := []string{tasks.TypeInvalidate, tasks.TypeWarm, tasks.TypeProcessData}
	if diff := cmp.Diff(want, reg.Types()); diff != "" {
		t.Fatalf("Types() (-want +got):\n%s", diff)
	}
	if reg != tasks.Default() {
		t.Errorf("Default() built a second registry")
	}
}

func TestDefaultDefinitions(t *testing.T) {
	t.Parallel()
	type def struct {
		Queue  string
		Fields []tasks.Field
	}
	want := map[string]def{
		tasks.TypeProcessData: {"default", []tasks.Field{
			{Name: "key", Type: "string", Required: true, Help: "cache key of the value, 1 to 512 characters, no control characters"},
			{Name: "work", Type: "integer", Required: true, Help: "rounds of SHA-256 the computation costs, 1 to 50000000"},
			{Name: "ttl_seconds", Type: "integer", Help: "seconds the value stays cached, 0 (the default) for the cache's default TTL"},
		}},
		tasks.TypeInvalidate: {"default", []tasks.Field{
			{Name: "keys", Type: "array of string", Help: "cache keys to delete, 1 to 10000 (or give pattern)"},
			{Name: "pattern", Type: "string", Help: "glob matching the cache keys to delete, e.g. user:* (or give keys)"},
		}},
		tasks.TypeWarm: {"low", []tasks.Field{
			{Name: "keys", Type: "array of string", Required: true, Help: "cache keys to warm, 1 to 100000, each 1 to 512 characters"},
			{Name: "work", Type: "integer", Required: true, Help: "rounds of SHA-256 each value costs, 1 to 1000000"},
			{Name: "ttl_seconds", Type: "integer", Help: "seconds the values stay cached, 0 (the default) for the cache's default TTL"},
		}},
	}
	got := make(map[string]def)
	for _, d := range tasks.Default().Definitions() {
		if d.Description() == "" {
			t.Errorf("%s: no description", d.Type())
		}
		got[d.Type()] = def{d.Queue(), d.Fields()}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("definitions (-want +got):\n%s", diff)
	}
}

// The typed constructors put the type's default options on the task, and
// options given at enqueue time override them.
func TestConstructors(t *testing.T) {
	t.Parallel()
	type enqueued struct {
		Type, Queue, Payload string
		MaxRetry             int
		Timeout              time.Duration
	}
	tests := []struct {
		name string
		give func() (*asynq.Task, error)
		want enqueued
	}{
		{
			name: "process_data",
			give: func() (*asynq.Task, error) {
				return tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:1", Work: 1000})
			},
			want: enqueued{tasks.TypeProcessData, "default", `{"key":"report:1","work":1000}`, 5, 10 * time.Minute},
		},
		{
			name: "process_data with overrides",
			give: func() (*asynq.Task, error) {
				return tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:1", Work: 1000, TTLSeconds: 60},
					asynq.Queue("critical"), asynq.MaxRetry(1), asynq.Timeout(time.Minute))
			},
			want: enqueued{tasks.TypeProcessData, "critical", `{"key":"report:1","work":1000,"ttl_seconds":60}`, 1, time.Minute},
		},
		{
			name: "invalidate keys",
			give: func() (*asynq.Task, error) {
				return tasks.NewInvalidateTask(tasks.Invalidate{Keys: []string{"a", "b"}})
			},
			// asynq's default timeout applies: 30 minutes.
			want: enqueued{tasks.TypeInvalidate, "default", `{"keys":["a","b"]}`, 3, 30 * time.Minute},
		},
		{
			name: "invalidate pattern",
			give: func() (*asynq.Task, error) {
				return tasks.NewInvalidateTask(tasks.Invalidate{Pattern: "user:*"})
			},
			want: enqueued{tasks.TypeInvalidate, "default", `{"pattern":"user:*"}`, 3, 30 * time.Minute},
		},
		{
			name: "warm",
			give: func() (*asynq.Task, error) {
				return tasks.NewWarmTask(tasks.Warm{Keys: []string{"a", "b"}, Work: 10})
			},
			want: enqueued{tasks.TypeWarm, "low", `{"keys":["a","b"],"work":10}`, 3, 30 * time.Minute},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUnit(t)
			task, err := tt.give()
			if err != nil {
				t.Fatal(err)
			}
			client := asynq.NewClientFromRedisClient(b.m.Client())
			info, err := client.EnqueueContext(context.Background(), task)
			if err != nil {
				t.Fatal(err)
			}
			got := enqueued{info.Type, info.Queue, string(info.Payload), info.MaxRetry, info.Timeout}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("enqueued task (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConstructorsRejectBadPayloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		give func() (*asynq.Task, error)
	}{
		{"process_data zero value", func() (*asynq.Task, error) { return tasks.NewProcessDataTask(tasks.ProcessData{}) }},
		{"process_data without work", func() (*asynq.Task, error) { return tasks.NewProcessDataTask(tasks.ProcessData{Key: "k"}) }},
		{"invalidate zero value", func() (*asynq.Task, error) { return tasks.NewInvalidateTask(tasks.Invalidate{}) }},
		{"invalidate both", func() (*asynq.Task, error) {
			return tasks.NewInvalidateTask(tasks.Invalidate{Keys: []string{"a"}, Pattern: "*"})
		}},
		{"warm zero value", func() (*asynq.Task, error) { return tasks.NewWarmTask(tasks.Warm{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tt.give()
			if !errors.Is(err, tasks.ErrInvalidPayload) || task != nil {
				t.Errorf("got task %v, error %v; want no task and ErrInvalidPayload", task, err)
			}
		})
	}
}

// A payload that can never parse fails with asynq.SkipRetry, so asynq
// archives it instead of retrying, and the handler touches nothing.
func TestBadPayloadSkipsRetry(t *testing.T) {
	t.Parallel()
	for _, tt := range badPayloads() {
		t.Run(tt.giveType+"/"+tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUnit(t)
			mux := tasks.NewMux(tasks.Default(), b.deps)
			err := mux.ProcessTask(context.Background(), asynq.NewTask(tt.giveType, []byte(tt.givePayload)))
			if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, tasks.ErrInvalidPayload) {
				t.Fatalf("error %v, want one wrapping asynq.SkipRetry and ErrInvalidPayload", err)
			}
			if keys := b.mr.Keys(); len(keys) != 0 {
				t.Errorf("keys after a bad payload: %q", keys)
			}
			logged := b.logs.FilterMessage("task failed").FilterField(zap.String("outcome", "skip_retry")).Len()
			if logged != 1 {
				t.Errorf("%d skip_retry log lines, want 1", logged)
			}
		})
	}
}
