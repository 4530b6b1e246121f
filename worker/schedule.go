package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// How the scheduler makes replicas agree.
//
// Every replica runs the same schedule and tries to enqueue every tick. The
// task of a tick has the ID "sched:<name>:<tick in Unix seconds>", so the
// first enqueue wins and the others fail with asynq.ErrTaskIDConflict, as
// long as the task still exists in Redis: pending, active, retrying,
// archived, or completed and within its retention. A replica enqueues a tick
// only until scheduleLateness after it, so a retention of
// scheduleRetention, well above that plus any clock skew between replicas,
// keeps the ID taken for as long as anyone may try it.
const (
	// scheduleLateness is how late a tick may still be enqueued, after a
	// slow loop or a stalled Redis; older ticks are skipped with a warning.
	scheduleLateness = time.Minute
	// scheduleRetention is how long a scheduled task is kept after it
	// completes (at least; a type's own longer retention wins).
	scheduleRetention = 10 * time.Minute
)

// periodic is one checked schedule entry.
type periodic struct {
	name  string
	spec  string
	sched cron.Schedule
	// every is the period of an "@every" spec, whose ticks fall on
	// multiples of it since the Unix epoch; 0 for cron specs.
	every time.Duration
	task  *asynq.Task
	typ   string
	queue string
	// retention is how long the completed task is kept.
	retention time.Duration
	// opts are the task's options in asynq's text form, for the
	// dashboard.
	opts []string
}

// newPeriodics checks each entry against reg (its type must exist and its
// payload suit the type) and builds its task: the type's default options,
// then asynq.MaxRetry(maxRetry) if the type sets none, then the entry's
// queue. Errors name the entry by its Source.
func newPeriodics(entries []config.ScheduleEntry, reg *tasks.Registry, maxRetry int, now time.Time) ([]*periodic, error) {
	var (
		out  []*periodic
		errs []error
	)
	for _, e := range entries {
		p, err := newPeriodic(e, reg, maxRetry, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Source, err))
			continue
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func newPeriodic(e config.ScheduleEntry, reg *tasks.Registry, maxRetry int, now time.Time) (*periodic, error) {
	var b workflow.Builder
	if def, ok := reg.Lookup(e.Type); ok {
		b = def
	}
	// Unknown types fail in reg.NewTask, with the registry's message.
	return buildPeriodic(e, b, func(payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
		return reg.NewTask(e.Type, payload, opts...)
	}, maxRetry, now)
}

// buildPeriodic checks e and builds its task with newTask: the defaults
// of b (nil for an unknown type), then asynq.MaxRetry(maxRetry) if they
// set none, then the entry's queue.
func buildPeriodic(e config.ScheduleEntry, b workflow.Builder, newTask func([]byte, ...asynq.Option) (*asynq.Task, error), maxRetry int, now time.Time) (*periodic, error) {
	sched, err := config.ParseScheduleSpec(e.Spec)
	if err != nil {
		return nil, err
	}
	p := &periodic{name: e.Name, spec: e.Spec, sched: sched, typ: e.Type, queue: "default", retention: scheduleRetention}
	if c, ok := sched.(cron.ConstantDelaySchedule); ok {
		p.every = c.Delay
	}
	var (
		opts     []asynq.Option
		defaults []asynq.Option
	)
	if b != nil {
		defaults = b.Defaults()
		hasMaxRetry := false
		for _, o := range defaults {
			switch o.Type() {
			case asynq.QueueOpt:
				if q, ok := o.Value().(string); ok {
					p.queue = q
				}
			case asynq.MaxRetryOpt:
				hasMaxRetry = true
			case asynq.RetentionOpt:
				if d, ok := o.Value().(time.Duration); ok && d > p.retention {
					p.retention = d
				}
			}
		}
		if !hasMaxRetry {
			opts = append(opts, asynq.MaxRetry(maxRetry))
		}
	}
	if e.Queue != "" {
		p.queue = e.Queue
		opts = append(opts, asynq.Queue(e.Queue))
	}
	// Unknown types and bad payloads fail here.
	if p.task, err = newTask([]byte(e.Payload), opts...); err != nil {
		return nil, err
	}
	if p.next(now).IsZero() {
		return nil, fmt.Errorf("spec %q never matches a date", e.Spec)
	}
	p.opts = boardOptions(defaults, opts, p.queue, p.retention)
	return p, nil
}

// next returns the first tick of p strictly after t, or the zero time if
// there is none in the next five years.
func (p *periodic) next(t time.Time) time.Time {
	if p.every > 0 {
		d := int64(p.every)
		return time.Unix(0, (t.UnixNano()/d+1)*d)
	}
	return p.sched.Next(t.UTC())
}

// taskID is the ID of the task of p's tick.
func (p *periodic) taskID(tick time.Time) string {
	return "sched:" + p.name + ":" + strconv.FormatInt(tick.Unix(), 10)
}

// enqueuer is what the scheduler needs of asynq.Client.
type enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// scheduler enqueues the periodic tasks at their ticks. Several replicas
// with the same schedule enqueue each tick once; see scheduleLateness.
// Ticks begin after Run starts: a tick that fell while no replica ran is not
// made up. With a live source it runs the entries stored in Redis too
// (schedule_live.go); with a board it publishes its entries to the
// dashboard (schedule_board.go).
type scheduler struct {
	client  enqueuer
	static  []*periodic // the program's own entries
	entries []*periodic // the entries run: static, then the live ones
	log     *zap.Logger
	next    []time.Time          // the next tick of each entry; zero: none
	prev    map[string]time.Time // the last tick enqueued of each entry, by name

	live  *live  // nil: the program's entries only
	board *board // nil: not published
}

func newScheduler(client enqueuer, entries []*periodic, log *zap.Logger) *scheduler {
	return &scheduler{client: client, static: entries, entries: entries, log: log.Named("scheduler"), prev: make(map[string]time.Time)}
}

// Run enqueues ticks until ctx ends, then returns nil. Enqueue failures are
// logged, not returned: another replica, or the next tick, may succeed.
// With a live source, it checks the stored entries every scheduleReload
// and before every tick.
func (s *scheduler) Run(ctx context.Context) error {
	now := time.Now()
	s.start(now)
	for i, e := range s.entries {
		s.log.Info("schedule entry", zap.String("schedule", e.name), zap.String("spec", e.spec),
			zap.String("task_type", e.typ), zap.String("queue", e.queue), zap.Time("next", s.next[i]))
	}
	s.refresh(ctx, now)
	s.publish(ctx, now)
	for {
		wake := s.wake()
		if s.live != nil {
			if r := s.live.checked.Add(scheduleReload); wake.IsZero() || r.Before(wake) {
				wake = r
			}
		}
		if wake.IsZero() {
			<-ctx.Done()
			return nil
		}
		timer := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		now := time.Now()
		s.refresh(ctx, now)
		s.tick(ctx, now)
		s.publish(ctx, time.Now())
	}
}

// publish writes the entries to the dashboard, if s has a board.
func (s *scheduler) publish(ctx context.Context, now time.Time) {
	if s.board != nil && ctx.Err() == nil {
		s.board.publish(ctx, now, s.entries, s.next, s.prev)
	}
}

// start sets each entry's first tick: the first after now.
func (s *scheduler) start(now time.Time) {
	s.next = make([]time.Time, len(s.entries))
	for i, e := range s.entries {
		s.next[i] = e.next(now)
	}
}

// wake returns the earliest next tick, or the zero time if none.
func (s *scheduler) wake() time.Time {
	var w time.Time
	for _, t := range s.next {
		if !t.IsZero() && (w.IsZero() || t.Before(w)) {
			w = t
		}
	}
	return w
}

// tick enqueues every tick due at now and moves each entry to its next
// tick. Ticks older than scheduleLateness are skipped with a warning.
func (s *scheduler) tick(ctx context.Context, now time.Time) {
	for i, e := range s.entries {
		for !s.next[i].IsZero() && !s.next[i].After(now) {
			if ctx.Err() != nil {
				return
			}
			tick := s.next[i]
			if late := now.Sub(tick); late > scheduleLateness {
				resume := e.next(now.Add(-scheduleLateness))
				s.log.Warn("schedule ticks missed: too late to enqueue",
					zap.String("schedule", e.name), zap.Time("first_missed", tick), zap.Time("resume", resume),
					zap.Duration("lateness_limit", scheduleLateness))
				s.next[i] = resume
				continue
			}
			s.enqueue(ctx, e, tick)
			s.next[i] = e.next(tick)
		}
	}
}

// enqueue enqueues e's task for tick, once across replicas.
func (s *scheduler) enqueue(ctx context.Context, e *periodic, tick time.Time) {
	id := e.taskID(tick)
	fields := []zap.Field{
		zap.String("schedule", e.name), zap.String("task_id", id),
		zap.String("task_type", e.typ), zap.String("queue", e.queue), zap.Time("tick", tick),
	}
	_, err := s.client.EnqueueContext(ctx, e.task, asynq.TaskID(id), asynq.Retention(e.retention))
	switch {
	case err == nil:
		s.log.Info("scheduled task enqueued", fields...)
		s.enqueued(e, tick)
		if s.board != nil {
			s.board.record(ctx, e, id, tick, time.Now())
		}
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s.log.Debug("scheduled task already enqueued by another replica", fields...)
		s.enqueued(e, tick)
	case errors.Is(err, asynq.ErrDuplicateTask):
		s.log.Info("scheduled task skipped: its type's unique lock is held", fields...)
	case ctx.Err() != nil:
		// Shutting down.
	default:
		s.log.Error("enqueue scheduled task", append(fields, zap.Error(err))...)
	}
}

// enqueued notes that e's tick is enqueued, by this replica or another.
func (s *scheduler) enqueued(e *periodic, tick time.Time) {
	if tick.After(s.prev[e.name]) {
		s.prev[e.name] = tick
		if s.board != nil {
			s.board.dirty = true
		}
	}
}

// warnUnservedQueues warns about schedule entries whose queue this worker
// does not serve: their tasks wait for another worker.
func warnUnservedQueues(entries []*periodic, queues map[string]int, log *zap.Logger) {
	for _, e := range entries {
		if _, ok := queues[e.queue]; !ok {
			log.Warn("schedule entry enqueues to a queue this worker does not serve; another worker must",
				zap.String("schedule", e.name), zap.String("queue", e.queue))
		}
	}
}
