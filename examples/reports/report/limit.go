package report

import (
	"context"

	"github.com/hibiken/asynq"
)

// LimitDays returns a task middleware that lets at most
// Options.MaxParallelDays report:day tasks compute at once in the process;
// the others wait for a slot (or for their context to end, then fail and
// are retried). The days are CPU-bound: the limit keeps cores for the
// other tasks and the web process however many days a big report fans
// out. Other task types pass straight through.
func (s *Service) LimitDays() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			if t.Type() != TypeDay {
				return next.ProcessTask(ctx, t)
			}
			select {
			case s.daySlots <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			defer func() { <-s.daySlots }()
			return next.ProcessTask(ctx, t)
		})
	}
}
