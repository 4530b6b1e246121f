package report_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/examples/reports/report"
)

func TestLimitDays(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveType string
		want     int32
	}{
		{name: "days are limited", giveType: report.TypeDay, want: 2},
		{name: "builds are not", giveType: report.TypeBuild, want: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newService(t, report.Options{MaxParallelDays: 2})
			var running, peak atomic.Int32
			release := make(chan struct{})
			h := s.LimitDays()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
				n := running.Add(1)
				defer running.Add(-1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				return nil
			}))

			var wg sync.WaitGroup
			for range 6 {
				wg.Go(func() {
					if err := h.ProcessTask(t.Context(), asynq.NewTask(tt.giveType, nil)); err != nil {
						t.Error(err)
					}
				})
			}
			// Let every task that may start, start.
			deadline := time.Now().Add(5 * time.Second)
			for running.Load() < tt.want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			close(release)
			wg.Wait()

			if got := peak.Load(); got != tt.want {
				t.Errorf("at most %d tasks ran at once, want %d", got, tt.want)
			}
		})
	}
}

func TestLimitDaysGivesUpWithTheContext(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{MaxParallelDays: 1})
	holding, release := make(chan struct{}), make(chan struct{})
	h := s.LimitDays()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		close(holding)
		<-release
		return nil
	}))
	done := make(chan error, 1)
	go func() { done <- h.ProcessTask(context.Background(), asynq.NewTask(report.TypeDay, nil)) }()
	<-holding // the one slot is taken

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.ProcessTask(ctx, asynq.NewTask(report.TypeDay, nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want context.DeadlineExceeded", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the first task: %v", err)
	}
}
