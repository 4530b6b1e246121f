package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
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

	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// liveDB is the test Redis database of the live schedule tests, which
// take turns on it.
const liveDB = 55

var liveDBLock sync.Mutex

// flushedLiveURL locks and flushes liveDB and returns its URL.
func flushedLiveURL(tb testing.TB) string {
	tb.Helper()
	liveDBLock.Lock()
	tb.Cleanup(liveDBLock.Unlock)
	url := redistest.URL(tb, liveDB)
	if err := redisClient(tb, url).FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return url
}

// putEntry stores an entry or fails the test.
func putEntry(tb testing.TB, st *schedule.Store, e schedule.Entry) {
	tb.Helper()
	if _, _, err := st.Put(context.Background(), e); err != nil {
		tb.Fatal(err)
	}
}

func TestSchedulerLive(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	mr := miniredis.RunT(t)
	// No retries: the test stops Redis.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	reg := testRegistry(t)
	st := schedule.NewStore(rdb, workflow.RegistryTypes(reg))
	q := &fakeQueue{}
	core, logs := observer.New(zapcore.DebugLevel)
	s := newScheduler(q, mustPeriodics(t, reg, entry("static", "@every 1s", "test:plain", `{"n":1}`)), zap.New(core))
	s.live = newLive(schedule.NewStore(rdb, nil), workflow.RegistryTypes(reg), testMaxRetry)
	s.start(time.Unix(1000, 3e8))

	// step refreshes half a second before Unix second sec, as the
	// scheduler does every second, and ticks just after it; it returns
	// the ids enqueued then.
	step := func(sec int64) []string {
		before := len(q.enqueued())
		s.refresh(ctx, time.Unix(sec-1, 5e8))
		s.tick(ctx, time.Unix(sec, 1e6))
		got := q.enqueued()[before:]
		slices.Sort(got)
		return got
	}
	check := func(sec int64, want ...string) {
		t.Helper()
		slices.Sort(want)
		if d := cmp.Diff(want, step(sec), cmpEmpty); d != "" {
			t.Errorf("second %d: enqueued (-want +got)\n%s", sec, d)
		}
	}

	check(1001, "sched:static:1001")
	putEntry(t, st, schedule.Entry{Name: "dyn", Spec: "@every 2s", Type: "test:own", Payload: json.RawMessage(`{"n":2}`)})
	check(1002, "sched:static:1002", "sched:dyn:1002")
	if i := slices.IndexFunc(s.entries, func(p *periodic) bool { return p.name == "dyn" }); i < 0 || s.entries[i].queue != "low" {
		t.Errorf("dyn entry: %v", s.entries)
	}
	check(1003, "sched:static:1003")

	// A stored entry of the program's entry's name replaces it: paused,
	// it pauses it; removed, the program's runs again.
	putEntry(t, st, schedule.Entry{Name: "static", Spec: "@every 1s", Type: "test:plain", Payload: json.RawMessage(`{"n":1}`), Paused: true})
	check(1004, "sched:dyn:1004")
	check(1005)
	if _, err := st.Resume(ctx, "static"); err != nil {
		t.Fatal(err)
	}
	check(1006, "sched:static:1006", "sched:dyn:1006")
	if _, err := st.Pause(ctx, "dyn"); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(ctx, "static"); err != nil {
		t.Fatal(err)
	}
	check(1007, "sched:static:1007")
	check(1008, "sched:static:1008")
	// Changed: a new spec starts at its first tick after the change.
	putEntry(t, st, schedule.Entry{Name: "dyn", Spec: "@every 5s", Type: "test:plain", Payload: json.RawMessage(`{"n":3}`)})
	check(1009, "sched:static:1009")
	check(1010, "sched:static:1010", "sched:dyn:1010")

	for _, msg := range []string{"schedule entry added", "schedule entry paused", "schedule entry changed", "schedule entry removed"} {
		if logs.FilterMessage(msg).Len() == 0 {
			t.Errorf("no %q log", msg)
		}
	}
	if n := logs.FilterMessage("schedule entry paused").FilterField(zap.Bool("replaces_program_entry", true)).Len(); n != 1 {
		t.Errorf("%d paused logs say they replace the program's entry, want 1", n)
	}

	// An entry whose type this worker does not know is refused, once,
	// and the others run.
	if err := rdb.HSet(ctx, schedule.Key, "ghost", `{"name":"ghost","spec":"@every 1s","type":"test:ghost","payload":{}}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HIncrBy(ctx, schedule.Key, schedule.VersionField, 1).Err(); err != nil {
		t.Fatal(err)
	}
	check(1011, "sched:static:1011")
	check(1012, "sched:static:1012")
	if n := logs.FilterMessage("stored schedule entry refused; it does not run").Len(); n != 1 {
		t.Errorf("%d refusal logs, want 1", n)
	}

	// Redis down: the entries read before keep running, with one warning.
	mr.Close()
	check(1013, "sched:static:1013")
	check(1014, "sched:static:1014")
	if n := logs.FilterMessage("stored schedule entries not read; running the ones read before").Len(); n != 1 {
		t.Errorf("%d warnings about Redis, want 1", n)
	}
}

// cmpEmpty makes nil and empty slices equal.
var cmpEmpty = cmp.Transformer("nonNil", func(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
})

func TestScheduleBoard(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg := testRegistry(t)
	st := schedule.NewStore(rdb, workflow.RegistryTypes(reg))
	s := newScheduler(asynq.NewClientFromRedisClient(rdb), mustPeriodics(t, reg, entry("static", "@every 1h", "test:own", `{"n":1}`)), zap.NewNop())
	s.live = newLive(schedule.NewStore(rdb, nil), workflow.RegistryTypes(reg), testMaxRetry)
	s.board = newBoard(rdb, zap.NewNop())
	putEntry(t, st, schedule.Entry{Name: "dyn", Spec: "*/5 * * * *", Type: "test:plain", Payload: json.RawMessage(`{"n":2}`), Queue: "critical"})
	putEntry(t, st, schedule.Entry{Name: "sleepy", Spec: "@every 1s", Type: "test:plain", Payload: json.RawMessage(`{"n":3}`), Paused: true})
	now := time.Now()
	s.start(now)
	s.refresh(ctx, now)
	s.publish(ctx, now)

	in := asynq.NewInspectorFromRedisClient(rdb)
	type shown struct {
		ID, Spec, Type, Payload string
		Opts                    []string
		Next, Prev              time.Time
	}
	read := func() []shown {
		t.Helper()
		entries, err := in.SchedulerEntries()
		if err != nil {
			t.Fatal(err)
		}
		var out []shown
		for _, e := range entries {
			var opts []string
			for _, o := range e.Opts {
				opts = append(opts, o.String())
			}
			out = append(out, shown{e.ID, e.Spec, e.Task.Type(), string(e.Task.Payload()), opts, e.Next, e.Prev})
		}
		return out
	}
	hour := now.Truncate(time.Hour).Add(time.Hour)
	five := now.Truncate(5 * time.Minute).Add(5 * time.Minute)
	want := []shown{
		{"static", "@every 1h", "test:own", `{"n":1}`, []string{"MaxRetry(2)", `Queue("low")`, "Retention(1h0m0s)"}, hour, time.Time{}},
		{"dyn", "*/5 * * * *", "test:plain", `{"n":2}`, []string{"MaxRetry(7)", `Queue("critical")`, "Retention(10m0s)"}, five, time.Time{}},
	}
	if d := cmp.Diff(want, read()); d != "" {
		t.Errorf("dashboard entries (-want +got)\n%s", d)
	}

	// A tick enqueued: its previous run and its history.
	s.tick(ctx, hour.Add(time.Second))
	s.publish(ctx, now.Add(2*time.Second))
	want[0].Prev, want[0].Next = hour, hour.Add(time.Hour)
	if hour.After(five) || hour.Equal(five) {
		want[1].Prev, want[1].Next = five, five.Add(5*time.Minute)
		for !want[1].Next.After(hour) {
			want[1].Next = want[1].Next.Add(5 * time.Minute)
		}
		want[1].Prev = want[1].Next.Add(-5 * time.Minute)
	}
	if d := cmp.Diff(want, read()); d != "" {
		t.Errorf("dashboard entries after a tick (-want +got)\n%s", d)
	}
	events, err := in.ListSchedulerEnqueueEvents("static")
	if err != nil || len(events) != 1 || events[0].TaskID != "sched:static:"+strconv.FormatInt(hour.Unix(), 10) {
		t.Errorf("history = %+v, %v", events, err)
	}

	// No entries left: the list is gone.
	s.static = nil
	for _, name := range []string{"dyn", "sleepy"} {
		if err := st.Remove(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	s.refresh(ctx, now.Add(3*time.Second))
	s.publish(ctx, now.Add(3*time.Second))
	if got := read(); len(got) != 0 {
		t.Errorf("entries after removing them all: %+v", got)
	}
	if mr.Exists(boardKey) {
		t.Error("the entry list is still in Redis")
	}
}

// TestScheduleLiveReplicas runs three worker processes on one real Redis,
// adds an entry to the schedule while they run, then pauses it: every tick
// in between is enqueued exactly once, and none after the pause.
func TestScheduleLiveReplicas(t *testing.T) {
	t.Parallel()

	url := flushedLiveURL(t)
	env := map[string]string{"REDIS_CONNECTION_URL": url, "LOG_LEVEL": "debug"}
	workers := []*workerProc{startWorker(t, env), startWorker(t, env), startWorker(t, env)}
	for _, w := range workers {
		w.log.waitMsg(t, "worker started", 30*time.Second)
	}
	ctx := context.Background()
	st := schedule.NewStore(redisClient(t, url), workflow.RegistryTypes(tasks.Default()))
	putEntry(t, st, schedule.Entry{Name: "live", Spec: "@every 1s", Type: "cache:invalidate", Payload: json.RawMessage(`{"pattern":"live-test:*"}`)})
	added := time.Now()
	time.Sleep(5 * time.Second)
	if _, err := st.Pause(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	time.Sleep(2500 * time.Millisecond)

	// The dashboard lists the entry while the workers run.
	in := asynq.NewInspectorFromRedisClient(redisClient(t, url))
	list, err := st.List(ctx)
	if err != nil || len(list) != 1 || !list[0].Paused || list[0].Prev.IsZero() {
		t.Errorf("List = %+v, %v", list, err)
	}

	for _, w := range workers {
		w.stop(t)
	}
	for _, w := range workers {
		if code := w.wait(t, 20*time.Second); code != 0 {
			t.Errorf("exit code %d", code)
		}
	}

	enqueued := map[string]int{}
	conflicts := 0
	for _, w := range workers {
		for _, e := range w.log.withMsg("scheduled task enqueued") {
			if id, _ := e["task_id"].(string); strings.HasPrefix(id, "sched:live:") {
				enqueued[id]++
			}
		}
		for _, e := range w.log.withMsg("scheduled task already enqueued by another replica") {
			if id, _ := e["task_id"].(string); strings.HasPrefix(id, "sched:live:") {
				conflicts++
			}
		}
		if w.log.withMsg("schedule entry added") == nil || w.log.withMsg("schedule entry paused") == nil {
			t.Errorf("a worker did not log the entry added and paused")
		}
	}
	var secs []int64
	for id, n := range enqueued {
		if n != 1 {
			t.Errorf("%s enqueued %d times", id, n)
		}
		sec, _ := strconv.ParseInt(strings.TrimPrefix(id, "sched:live:"), 10, 64)
		secs = append(secs, sec)
	}
	slices.Sort(secs)
	if len(secs) < 4 {
		t.Fatalf("only %d ticks enqueued in 5s: %v", len(secs), secs)
	}
	if d := cmp.Diff(seconds(secs[0], secs[len(secs)-1]), secs); d != "" {
		t.Errorf("ticks are not consecutive seconds (-want +got)\n%s", d)
	}
	// Each worker reads the entries within about a second of the put.
	if first := time.Unix(secs[0], 0); first.Sub(added) > 2*time.Second {
		t.Errorf("first tick %v, %v after the entry was added", first, first.Sub(added))
	}
	// None after the pause: the workers check before every tick.
	if last := time.Unix(secs[len(secs)-1], 0); last.After(paused) {
		t.Errorf("tick %v enqueued after the pause at %v", last, paused)
	}
	t.Logf("3 workers: %d ticks %d..%d enqueued once each, %d conflicts", len(secs), secs[0], secs[len(secs)-1], conflicts)
	if conflicts < len(secs) {
		t.Errorf("%d conflicts for %d ticks: did all three run the entry?", conflicts, len(secs))
	}
	tasks, err := in.ListPendingTasks("default", asynq.PageSize(1000))
	if err != nil {
		t.Fatal(err)
	}
	completed, _ := in.ListCompletedTasks("default", asynq.PageSize(1000))
	if n := len(tasks) + len(completed); n > len(secs) {
		t.Errorf("%d tasks in Redis for %d ticks", n, len(secs))
	}
}

// TestScheduleDashboardPage runs a worker with its web process: the
// dashboard's Schedulers page (its API) lists a stored entry and a
// WORKER_SCHEDULE one with their next and previous runs, and the
// /api/schedules routes change the stored one.
func TestScheduleDashboardPage(t *testing.T) {
	t.Parallel()

	url := flushedLiveURL(t)
	w := startWebWorker(t, map[string]string{
		"REDIS_CONNECTION_URL": url,
		"WORKER_SCHEDULE":      `[{"name": "config-entry", "spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "page-test:*"}}]`,
	})
	res := w.do(t, http.MethodPut, "/api/schedules/page-entry", `{"spec": "@every 2s", "type": "data:process", "payload": {"key": "k", "work": 1}, "queue": "low"}`, nil)
	if res.status != http.StatusCreated || res.header.Get("Location") != "/api/schedules/page-entry" {
		t.Fatalf("PUT: %d %s", res.status, res.body)
	}
	type pageEntry struct {
		ID            string   `json:"id"`
		Spec          string   `json:"spec"`
		TaskType      string   `json:"task_type"`
		Opts          []string `json:"options"`
		NextEnqueueAt string   `json:"next_enqueue_at"`
		PrevEnqueueAt string   `json:"prev_enqueue_at"`
	}
	var page struct {
		Entries []pageEntry `json:"entries"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := w.do(t, http.MethodGet, "/monitoring/api/scheduler_entries", "", nil)
		if res.status != http.StatusOK {
			t.Fatalf("scheduler_entries: %d %s", res.status, res.body)
		}
		res.decode(t, &page)
		done := len(page.Entries) == 2
		for _, e := range page.Entries {
			done = done && e.PrevEnqueueAt != ""
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Schedulers page shows %+v", page.Entries)
		}
		time.Sleep(200 * time.Millisecond)
	}
	slices.SortFunc(page.Entries, func(a, b pageEntry) int { return strings.Compare(a.ID, b.ID) })
	for i, want := range []struct{ id, spec, typ string }{{"config-entry", "@every 1s", "cache:invalidate"}, {"page-entry", "@every 2s", "data:process"}} {
		e := page.Entries[i]
		next, err1 := time.Parse(time.RFC3339, e.NextEnqueueAt)
		prev, err2 := time.Parse(time.RFC3339, e.PrevEnqueueAt)
		if e.ID != want.id || e.Spec != want.spec || e.TaskType != want.typ || err1 != nil || err2 != nil || !next.After(prev) {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	if !slices.Contains(page.Entries[1].Opts, `Queue("low")`) {
		t.Errorf("page-entry options %v lack its queue", page.Entries[1].Opts)
	}
	res = w.do(t, http.MethodGet, "/monitoring/api/scheduler_entries/page-entry/enqueue_events", "", nil)
	if res.status != http.StatusOK || !strings.Contains(string(res.body), "sched:page-entry:") {
		t.Errorf("enqueue events: %d %s", res.status, res.body)
	}

	// Paused: gone from the page (it lists what runs), still in the API.
	if res := w.do(t, http.MethodPost, "/api/schedules/page-entry/pause", "", nil); res.status != http.StatusOK {
		t.Fatalf("pause: %d %s", res.status, res.body)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		w.do(t, http.MethodGet, "/monitoring/api/scheduler_entries", "", nil).decode(t, &page)
		if len(page.Entries) == 1 && page.Entries[0].ID == "config-entry" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the pause the page shows %+v", page.Entries)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var list struct {
		Schedules []schedule.Info `json:"schedules"`
	}
	w.do(t, http.MethodGet, "/api/schedules", "", nil).decode(t, &list)
	if len(list.Schedules) != 1 || !list.Schedules[0].Paused || list.Schedules[0].Prev.IsZero() {
		t.Errorf("GET /api/schedules: %+v", list.Schedules)
	}
	if res := w.do(t, http.MethodDelete, "/api/schedules/page-entry", "", nil); res.status != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", res.status, res.body)
	}
}

// TestScheduleBoardCluster publishes to a Redis Cluster, where the
// sorted set and the entry list are on different slots, and reads the
// entries back as the dashboard does.
func TestScheduleBoardCluster(t *testing.T) {
	t.Parallel()

	p, err := redisurl.Parse(redistest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := p.NewClient(redisurl.Settings{})
	defer rdb.Close()
	ctx := context.Background()
	// A name of this run's own: the history key is the entry's.
	name := strings.TrimSuffix(redistest.Prefix(t), ":")
	s := newScheduler(asynq.NewClientFromRedisClient(rdb), mustPeriodics(t, testRegistry(t), entry(name, "@every 1h", "test:plain", `{"n":1}`)), zap.NewNop())
	s.board = newBoard(rdb, zap.NewNop())
	now := time.Now()
	s.start(now)
	hour := now.Truncate(time.Hour).Add(time.Hour)
	s.tick(ctx, hour.Add(time.Second)) // enqueues on queue "default" of the cluster
	s.publish(ctx, time.Now())
	t.Cleanup(func() {
		_ = rdb.Del(ctx, schedule.HistoryKeyPrefix+name).Err()
		_ = asynq.NewInspectorFromRedisClient(rdb).DeleteTask("default", "sched:"+name+":"+strconv.FormatInt(hour.Unix(), 10))
	})

	in := asynq.NewInspectorFromRedisClient(rdb)
	entries, err := in.SchedulerEntries()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(entries, func(e *asynq.SchedulerEntry) bool { return e.ID == name })
	if i < 0 || !entries[i].Prev.Equal(hour) || !entries[i].Next.Equal(hour.Add(time.Hour)) {
		t.Fatalf("entries on the cluster: %+v", entries)
	}
	events, err := in.ListSchedulerEnqueueEvents(name)
	if err != nil || len(events) != 1 {
		t.Errorf("history = %+v, %v", events, err)
	}
	s.entries, s.next = nil, nil
	s.board.changed = true
	s.publish(ctx, time.Now())
	if n, err := rdb.Exists(ctx, boardKey).Result(); err != nil || n != 0 {
		t.Errorf("entry list after clearing: %d, %v", n, err)
	}
}
