package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/tasks"
)

func TestCancelledError(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("wrapped: %w", &tasks.CancelledError{By: "alice"})
	if !tasks.IsCancelled(err) || !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("%v: IsCancelled %v, SkipRetry %v; want both", err, tasks.IsCancelled(err), errors.Is(err, asynq.SkipRetry))
	}
	if got := (&tasks.CancelledError{By: "alice"}).Error(); got != "cancelled by alice" {
		t.Errorf("Error() = %q, want the archived task's reason", got)
	}
	tests := []struct {
		name        string
		giveErr     error
		wantOutcome string
	}{
		{name: "cancelled", giveErr: err, wantOutcome: tasks.OutcomeCancelled},
		{name: "skip retry", giveErr: asynq.SkipRetry, wantOutcome: tasks.OutcomeSkipRetry},
		{name: "nil", giveErr: nil, wantOutcome: tasks.OutcomeDone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tasks.Outcome(context.Background(), tt.giveErr); got != tt.wantOutcome {
				t.Errorf("Outcome = %q, want %q", got, tt.wantOutcome)
			}
			if tasks.IsCancelled(tt.giveErr) != (tt.wantOutcome == tasks.OutcomeCancelled) {
				t.Errorf("IsCancelled(%v) wrong", tt.giveErr)
			}
		})
	}
}

// A cancelled task's log line is a warning "task cancelled" with outcome
// cancelled and its reason.
func TestNewMuxLogsCancelledTasks(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	typ := tasks.Define("cancel:me", "", func(context.Context, tasks.Deps, struct{}) ([]byte, error) {
		return nil, &tasks.CancelledError{By: "alice"}
	})
	reg, err := tasks.NewRegistry(typ)
	if err != nil {
		t.Fatal(err)
	}
	mux := tasks.NewMux(reg, tasks.Deps{Logger: zap.New(core)})
	if err := mux.ProcessTask(context.Background(), asynq.NewTask("cancel:me", []byte(`{}`))); !tasks.IsCancelled(err) {
		t.Fatalf("ProcessTask: %v, want the CancelledError", err)
	}
	entries := logs.FilterMessage("task cancelled").All()
	if len(entries) != 1 || entries[0].Level != zap.WarnLevel {
		t.Fatalf("log: %v, want one warning \"task cancelled\"", logs.All())
	}
	if f := entries[0].ContextMap(); f["outcome"] != tasks.OutcomeCancelled || f["error"] != "cancelled by alice" {
		t.Errorf("log fields %v, want outcome cancelled, error \"cancelled by alice\"", f)
	}
}
