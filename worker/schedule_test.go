package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/tasks"
)

// entry returns a schedule entry as config.Load would.
func entry(name, spec, typ, payload string) config.ScheduleEntry {
	return config.ScheduleEntry{Name: name, Spec: spec, Type: typ, Payload: payload,
		Source: fmt.Sprintf("WORKER_SCHEDULE: entry 1 (%q)", name)}
}

// testRegistry has a type with no default options and one with its own.
func testRegistry(tb testing.TB) *tasks.Registry {
	tb.Helper()
	type payload struct {
		N int `json:"n"`
	}
	noop := func(context.Context, tasks.Deps, payload) ([]byte, error) { return nil, nil }
	reg, err := tasks.NewRegistry(
		tasks.Define("test:plain", "no defaults", noop),
		tasks.Define("test:own", "own defaults", noop, asynq.Queue("low"), asynq.MaxRetry(2), asynq.Retention(time.Hour)),
	)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// testMaxRetry stands for WORKER_MAX_RETRY in mustPeriodics; it differs
// from asynq's own default of 25, so a task that carries it got it from the
// scheduler.
const testMaxRetry = 7

// mustPeriodics builds periodics or fails the test.
func mustPeriodics(tb testing.TB, reg *tasks.Registry, entries ...config.ScheduleEntry) []*periodic {
	tb.Helper()
	ps, err := newPeriodics(entries, reg, testMaxRetry, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

func TestPeriodicNext(t *testing.T) {
	t.Parallel()

	utc := func(h, m, s, ns int) time.Time { return time.Date(2031, 3, 4, h, m, s, ns, time.UTC) }
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		giveSpec string
		giveFrom time.Time
		want     []time.Time // the next three ticks
	}{
		{
			name:     "every: on multiples since the epoch",
			giveSpec: "@every 30s", giveFrom: utc(12, 0, 10, 500),
			want: []time.Time{utc(12, 0, 30, 0), utc(12, 1, 0, 0), utc(12, 1, 30, 0)},
		},
		{
			name:     "every: strictly after a tick",
			giveSpec: "@every 30s", giveFrom: utc(12, 0, 30, 0),
			want: []time.Time{utc(12, 1, 0, 0), utc(12, 1, 30, 0), utc(12, 2, 0, 0)},
		},
		{
			name:     "every: whatever the zone of the clock",
			giveSpec: "@every 1h", giveFrom: utc(12, 20, 0, 0).In(paris),
			want: []time.Time{utc(13, 0, 0, 0), utc(14, 0, 0, 0), utc(15, 0, 0, 0)},
		},
		{
			name:     "every: 7s from the epoch",
			giveSpec: "@every 7s", giveFrom: time.Unix(100, 0),
			want: []time.Time{time.Unix(105, 0), time.Unix(112, 0), time.Unix(119, 0)},
		},
		{
			name:     "cron in UTC",
			giveSpec: "*/15 9 * * *", giveFrom: utc(9, 7, 0, 0).In(paris),
			want: []time.Time{utc(9, 15, 0, 0), utc(9, 30, 0, 0), utc(9, 45, 0, 0)},
		},
		{
			name:     "cron with a zone",
			giveSpec: "CRON_TZ=Asia/Tokyo 0 9 * * *", giveFrom: utc(0, 0, 0, 0),
			want: []time.Time{utc(0, 0, 0, 0).AddDate(0, 0, 1), utc(0, 0, 0, 0).AddDate(0, 0, 2), utc(0, 0, 0, 0).AddDate(0, 0, 3)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustPeriodics(t, testRegistry(t), entry("e", tt.giveSpec, "test:plain", `{"n":1}`))[0]
			var got []time.Time
			for at := tt.giveFrom; len(got) < 3; {
				at = p.next(at)
				got = append(got, at)
			}
			if d := cmp.Diff(tt.want, got, cmp.Comparer(time.Time.Equal)); d != "" {
				t.Errorf("ticks (-want +got)\n%s", d)
			}
		})
	}
}

func TestNewPeriodicsTasks(t *testing.T) {
	t.Parallel()

	reg := testRegistry(t)
	ps := mustPeriodics(t, reg,
		entry("plain", "@hourly", "test:plain", `{"n":1}`),
		entry("own", "@hourly", "test:own", `{"n":2}`),
		config.ScheduleEntry{Name: "moved", Spec: "@hourly", Type: "test:own", Payload: `{"n":3}`, Queue: "critical"},
	)
	// Enqueue each task as the scheduler would and read back what asynq
	// stored.
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	type stored struct {
		Queue, Payload       string
		MaxRetry             int
		Retention            time.Duration
		WantQueue, WantTypeQ string
	}
	var got []stored
	for _, p := range ps {
		info, err := client.EnqueueContext(context.Background(), p.task, asynq.TaskID(p.taskID(time.Unix(60, 0))), asynq.Retention(p.retention))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, stored{Queue: info.Queue, Payload: string(info.Payload), MaxRetry: info.MaxRetry, Retention: info.Retention, WantQueue: p.queue})
	}
	want := []stored{
		// No MaxRetry of its own: WORKER_MAX_RETRY's.
		{Queue: "default", Payload: `{"n":1}`, MaxRetry: testMaxRetry, Retention: scheduleRetention, WantQueue: "default"},
		// Its own MaxRetry and a retention longer than the scheduler's.
		{Queue: "low", Payload: `{"n":2}`, MaxRetry: 2, Retention: time.Hour, WantQueue: "low"},
		// The entry's queue wins over the type's.
		{Queue: "critical", Payload: `{"n":3}`, MaxRetry: 2, Retention: time.Hour, WantQueue: "critical"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	if id := ps[0].taskID(time.Unix(1700000000, 0)); id != "sched:plain:1700000000" {
		t.Errorf("taskID = %q", id)
	}
}

func TestNewPeriodicsErrors(t *testing.T) {
	t.Parallel()

	reg := testRegistry(t)
	tests := []struct {
		name    string
		give    []config.ScheduleEntry
		wantErr []string
	}{
		{
			name:    "unknown type",
			give:    []config.ScheduleEntry{entry("a", "@hourly", "test:nope", "{}")},
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): tasks: unknown task type "test:nope" (known: test:own, test:plain)`},
		},
		{
			name:    "payload unfit for the type",
			give:    []config.ScheduleEntry{entry("b", "@hourly", "test:plain", `{"m":1}`)},
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("b"): tasks: invalid payload: test:plain: `},
		},
		{
			name:    "spec that never matches",
			give:    []config.ScheduleEntry{entry("c", "0 0 30 2 *", "test:plain", `{"n":1}`)},
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("c"): spec "0 0 30 2 *" never matches a date`},
		},
		{
			name: "every bad entry",
			give: []config.ScheduleEntry{
				entry("a", "@hourly", "test:nope", "{}"),
				entry("ok", "@hourly", "test:plain", `{"n":1}`),
				entry("b", "@hourly", "test:plain", `[]`),
			},
			wantErr: []string{`("a"): tasks: unknown task type`, `("b"): tasks: invalid payload`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := newPeriodics(tt.give, reg, 25, time.Now())
			if err == nil {
				t.Fatalf("no error; got %d periodics", len(got))
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// fakeQueue stands in for Redis in the scheduler's unit tests: it holds the
// task IDs enqueued and, like asynq, refuses an ID it already has.
type fakeQueue struct {
	mu   sync.Mutex
	ids  []string
	fail error // returned by every enqueue when set
}

func (q *fakeQueue) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := ""
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			id = o.Value().(string)
		}
	}
	if slices.Contains(q.ids, id) {
		return nil, fmt.Errorf("enqueue: %w", asynq.ErrTaskIDConflict)
	}
	q.ids = append(q.ids, id)
	return &asynq.TaskInfo{ID: id}, nil
}

func (q *fakeQueue) enqueued() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.ids)
}

// ids returns the task IDs of schedule name for the Unix seconds secs.
func ids(name string, secs ...int64) []string {
	var out []string
	for _, s := range secs {
		out = append(out, "sched:"+name+":"+strconv.FormatInt(s, 10))
	}
	return out
}

// seconds returns from, from+1, ..., to.
func seconds(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestSchedulerTick(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		q     *fakeQueue
		s     *scheduler
		logs  *observer.ObservedLogs
		start time.Time
	}
	// setup starts a scheduler with an "@every 1s" entry named "n" at
	// start, Unix second 1000.3.
	setup := func(t *testing.T) testBundle {
		core, logs := observer.New(zapcore.DebugLevel)
		q := &fakeQueue{}
		s := newScheduler(q, mustPeriodics(t, testRegistry(t), entry("n", "@every 1s", "test:plain", `{"n":1}`)), zap.New(core))
		start := time.Unix(1000, 3e8)
		s.start(start)
		return testBundle{q: q, s: s, logs: logs, start: start}
	}
	ctx := context.Background()

	t.Run("first tick after start", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if w := b.s.wake(); !w.Equal(time.Unix(1001, 0)) {
			t.Errorf("wake = %v, want second 1001", w)
		}
		b.s.tick(ctx, time.Unix(1000, 9e8)) // early wake-up: nothing due
		b.s.tick(ctx, time.Unix(1001, 1e6))
		if d := cmp.Diff(ids("n", 1001), b.q.enqueued()); d != "" {
			t.Errorf("(-want +got)\n%s", d)
		}
		if w := b.s.wake(); !w.Equal(time.Unix(1002, 0)) {
			t.Errorf("wake = %v, want second 1002", w)
		}
	})
	t.Run("late ticks within the limit are made up", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.s.tick(ctx, time.Unix(1004, 5e8))
		if d := cmp.Diff(ids("n", 1001, 1002, 1003, 1004), b.q.enqueued()); d != "" {
			t.Errorf("(-want +got)\n%s", d)
		}
	})
	t.Run("ticks beyond the limit are skipped with a warning", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		now := time.Unix(1000+600, 0) // ten minutes later
		b.s.tick(ctx, now)
		limit := int64(scheduleLateness / time.Second)
		if d := cmp.Diff(ids("n", seconds(1600-limit+1, 1600)...), b.q.enqueued()); d != "" {
			t.Errorf("(-want +got)\n%s", d)
		}
		warns := b.logs.FilterMessage("schedule ticks missed: too late to enqueue").All()
		if len(warns) != 1 || !warns[0].ContextMap()["first_missed"].(time.Time).Equal(time.Unix(1001, 0)) {
			t.Errorf("warnings = %v", warns)
		}
	})
	t.Run("two replicas enqueue each tick once", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		core, logs2 := observer.New(zapcore.DebugLevel)
		other := newScheduler(b.q, b.s.entries, zap.New(core))
		other.start(b.start.Add(200 * time.Millisecond)) // a replica started a bit later
		for sec := int64(1001); sec <= 1005; sec++ {
			// The replicas' loops wake in either order.
			first, second := b.s, other
			if sec%2 == 0 {
				first, second = other, b.s
			}
			first.tick(ctx, time.Unix(sec, 1e6))
			second.tick(ctx, time.Unix(sec, 2e6))
		}
		if d := cmp.Diff(ids("n", seconds(1001, 1005)...), b.q.enqueued()); d != "" {
			t.Errorf("(-want +got)\n%s", d)
		}
		enq := b.logs.FilterMessage("scheduled task enqueued").Len() + logs2.FilterMessage("scheduled task enqueued").Len()
		dup := b.logs.FilterMessage("scheduled task already enqueued by another replica").Len() +
			logs2.FilterMessage("scheduled task already enqueued by another replica").Len()
		if enq != 5 || dup != 5 {
			t.Errorf("logged %d enqueued and %d conflicts, want 5 and 5", enq, dup)
		}
		if n := b.logs.FilterLevelExact(zapcore.ErrorLevel).Len() + logs2.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
			t.Errorf("%d errors logged", n)
		}
	})
	t.Run("enqueue errors are logged and the tick passes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.q.fail = errors.New("READONLY You can't write against a read only replica")
		b.s.tick(ctx, time.Unix(1001, 0))
		b.s.tick(ctx, time.Unix(1002, 0))
		errs := b.logs.FilterMessage("enqueue scheduled task").FilterLevelExact(zapcore.ErrorLevel).All()
		if len(errs) != 2 || !strings.Contains(errs[0].ContextMap()["error"].(string), "READONLY") {
			t.Errorf("error logs = %v", errs)
		}
		if w := b.s.wake(); !w.Equal(time.Unix(1003, 0)) {
			t.Errorf("wake = %v, want second 1003", w)
		}
	})
	t.Run("nothing is enqueued once ctx ends", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		b.s.tick(cctx, time.Unix(1003, 0))
		if got := b.q.enqueued(); len(got) != 0 {
			t.Errorf("enqueued %v", got)
		}
	})
}

func TestSchedulerRunStops(t *testing.T) {
	t.Parallel()

	q := &fakeQueue{}
	s := newScheduler(q, mustPeriodics(t, testRegistry(t), entry("n", "@every 1s", "test:plain", `{"n":1}`)), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestScheduleDedup runs replicas of the scheduler on one real Redis: two
// in this process, then two worker processes. Every tick is enqueued, and
// processed, exactly once. The subtests share DB 7 and run in turn.
func TestScheduleDedup(t *testing.T) {
	t.Parallel()

	t.Run("two schedulers", func(t *testing.T) {
		url := flushedURL(t, 7)
		reg := testRegistry(t)
		ps := mustPeriodics(t, reg, entry("dedup", "@every 1s", "test:plain", `{"n":1}`))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var (
			wg   sync.WaitGroup
			logs []*observer.ObservedLogs
		)
		for range 2 {
			core, l := observer.New(zapcore.DebugLevel)
			logs = append(logs, l)
			// Each replica has its own connection pool, as separate
			// processes would.
			s := newScheduler(asynq.NewClientFromRedisClient(redisClient(t, url)), ps, zap.New(core))
			wg.Go(func() { _ = s.Run(ctx) })
		}
		start := time.Now()
		time.Sleep(3500 * time.Millisecond)
		cancel()
		wg.Wait()
		stop := time.Now()

		in := asynq.NewInspectorFromRedisClient(redisClient(t, url))
		pending, err := in.ListPendingTasks("default", asynq.PageSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ti := range pending {
			got = append(got, ti.ID)
		}
		sort.Strings(got)
		// One task per tick: consecutive seconds between start and stop
		// (a replica may just miss the first or the last).
		if len(got) < 2 {
			t.Fatalf("only %d ticks in 3.5s: %v", len(got), got)
		}
		first, _ := strconv.ParseInt(strings.TrimPrefix(got[0], "sched:dedup:"), 10, 64)
		want := ids("dedup", seconds(first, first+int64(len(got))-1)...)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("tasks in Redis (-want +got)\n%s", d)
		}
		if last := first + int64(len(got)) - 1; first <= start.Unix() || last > stop.Unix() {
			t.Errorf("ticks %d..%d outside the run %v..%v", first, last, start, stop)
		}
		var enq, dup int
		for _, l := range logs {
			enq += l.FilterMessage("scheduled task enqueued").Len()
			dup += l.FilterMessage("scheduled task already enqueued by another replica").Len()
		}
		if enq != len(got) || dup < len(got)-1 || dup == 0 {
			t.Errorf("replicas logged %d enqueues and %d conflicts for %d ticks; want %d and about as many", enq, dup, len(got), len(got))
		}
	})

	t.Run("two worker processes", func(t *testing.T) {
		url := flushedURL(t, 7)
		env := map[string]string{
			"REDIS_CONNECTION_URL": url,
			"LOG_LEVEL":            "debug",
			"WORKER_SCHEDULE":      `[{"name": "tick", "spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "sched-test:*"}}]`,
		}
		a, b := startWorker(t, env), startWorker(t, env)
		a.log.waitMsg(t, "worker started", 30*time.Second)
		b.log.waitMsg(t, "worker started", 30*time.Second)
		time.Sleep(4500 * time.Millisecond)
		a.stop(t)
		b.stop(t)
		for _, w := range []*workerProc{a, b} {
			if code := w.wait(t, 20*time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
		}

		count := func(msg string) map[string]int {
			n := map[string]int{}
			for _, w := range []*workerProc{a, b} {
				for _, e := range w.log.withMsg(msg) {
					if id, _ := e["task_id"].(string); strings.HasPrefix(id, "sched:tick:") {
						n[id]++
					}
				}
			}
			return n
		}
		enqueued, done := count("scheduled task enqueued"), count("task done")
		conflicts := count("scheduled task already enqueued by another replica")
		if len(enqueued) < 3 {
			t.Fatalf("only %d ticks enqueued in 4.5s: %v", len(enqueued), enqueued)
		}
		var secs []int64
		for id, n := range enqueued {
			if n != 1 {
				t.Errorf("%s enqueued %d times", id, n)
			}
			s, _ := strconv.ParseInt(strings.TrimPrefix(id, "sched:tick:"), 10, 64)
			secs = append(secs, s)
		}
		slices.Sort(secs)
		if d := cmp.Diff(seconds(secs[0], secs[len(secs)-1]), secs); d != "" {
			t.Errorf("ticks are not consecutive seconds (-want +got)\n%s", d)
		}
		in := asynq.NewInspectorFromRedisClient(redisClient(t, url))
		for id := range enqueued {
			switch n := done[id]; {
			case n > 1:
				t.Errorf("%s processed %d times", id, n)
			case n == 0:
				// Enqueued just before shutdown: it waits in the queue.
				if info, err := in.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStatePending {
					t.Errorf("%s neither processed nor pending: %+v, %v", id, info, err)
				}
			}
		}
		for id := range done {
			if enqueued[id] == 0 {
				t.Errorf("%s processed but never enqueued", id)
			}
		}
		if len(conflicts) < len(enqueued)-2 {
			t.Errorf("only %d of %d ticks saw the other replica's conflict; did both run the schedule?", len(conflicts), len(enqueued))
		}
	})
}
