package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

type order struct {
	Customer string `json:"customer"`
}

func noop(context.Context, tasks.Deps, order) ([]byte, error) { return nil, nil }

func TestLimitsDeclared(t *testing.T) {
	t.Parallel()
	base := tasks.Define("test:order", "an order", noop)
	limited := base.RateLimit(10, time.Second).MaxConcurrent(3).
		MaxConcurrentPerKey(1, func(o order) string { return o.Customer })

	if base.Definition().Limited() {
		t.Error("the declaration changed the type it was called on")
	}
	if _, ok := base.Definition().RateLimit(); ok {
		t.Error("base has a rate limit")
	}
	d := limited.Definition()
	if !d.Limited() {
		t.Error("Limited() = false")
	}
	if r, ok := d.RateLimit(); !ok || r != (tasks.Rate{N: 10, Per: time.Second, Burst: 10}) {
		t.Errorf("RateLimit() = %+v, %v", r, ok)
	}
	if d.MaxConcurrent() != 3 || d.MaxConcurrentPerKey() != 1 {
		t.Errorf("MaxConcurrent %d, MaxConcurrentPerKey %d", d.MaxConcurrent(), d.MaxConcurrentPerKey())
	}
	if k, err := d.ConcurrencyKey([]byte(`{"customer":"acme"}`)); err != nil || k != "acme" {
		t.Errorf("ConcurrencyKey = %q, %v", k, err)
	}
	if _, err := d.ConcurrencyKey([]byte(`{"colour":1}`)); !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("ConcurrencyKey of a bad payload: %v, want ErrInvalidPayload", err)
	}
	if k, err := base.Definition().ConcurrencyKey([]byte(`{"customer":"acme"}`)); err != nil || k != "" {
		t.Errorf("ConcurrencyKey without a per-key cap = %q, %v", k, err)
	}
	if r, _ := base.RateLimitBurst(5, time.Minute, 1).Definition().RateLimit(); r != (tasks.Rate{N: 5, Per: time.Minute, Burst: 1}) {
		t.Errorf("RateLimitBurst: %+v", r)
	}
	// The handler still runs.
	if _, err := limited.Handle(context.Background(), tasks.Deps{}, order{Customer: "a"}); err != nil {
		t.Error(err)
	}
}

func TestLimitsPanic(t *testing.T) {
	t.Parallel()
	typ := tasks.Define("test:order", "an order", noop)
	for _, tt := range []struct {
		name string
		give func()
	}{
		{"rate n", func() { typ.RateLimit(0, time.Second) }},
		{"rate per", func() { typ.RateLimit(1, 0) }},
		{"burst", func() { typ.RateLimitBurst(1, time.Second, 0) }},
		{"concurrent", func() { typ.MaxConcurrent(0) }},
		{"per key n", func() { typ.MaxConcurrentPerKey(0, func(order) string { return "" }) }},
		{"per key func", func() { typ.MaxConcurrentPerKey(1, nil) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.give()
		})
	}
}

func TestPostpone(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("wrapped: %w", tasks.Postpone(-time.Second, ""))
	pe, ok := tasks.AsPostpone(err)
	if !ok || pe.Delay != 0 || pe.Reason != "postponed" {
		t.Fatalf("AsPostpone = %+v, %v", pe, ok)
	}
	if got := tasks.Postpone(2*time.Second, "busy").Error(); got != "postponed for 2s: busy" {
		t.Errorf("Error() = %q", got)
	}
	if _, ok := tasks.AsPostpone(asynq.SkipRetry); ok {
		t.Error("SkipRetry is a postponement")
	}
	// Postponed, whatever else: it is no failure and no retry.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []context.Context{context.Background(), ctx} {
		if got := tasks.Outcome(c, err); got != tasks.OutcomePostponed {
			t.Errorf("Outcome = %q, want %q", got, tasks.OutcomePostponed)
		}
	}
}
