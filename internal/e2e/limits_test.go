package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
)

// limitWorkerPackage is the worker of the limit tests: its types declare
// limits (testdata/limitworker).
const limitWorkerPackage = "github.com/forgeq/forgeq/internal/e2e/testdata/limitworker"

// The limits testdata/limitworker declares.
const (
	limitRate     = 20 // PREFIX:rated, per second, with bursts of 20
	limitBurst    = 20
	limitCapped   = 3 // PREFIX:capped at once
	limitPerKey   = 1 // PREFIX:keyed at once per key
	limitWorkers  = 3
	limitPerProcs = 10 // WORKER_CONCURRENCY of each
)

// startSlack is how much later than the limiter's decision a handler may
// log its start (the round trips in between), for the rate check.
const startSlack = 25 * time.Millisecond

// ranLine is one "limit task ran" line of testdata/limitworker.
type ranLine struct {
	typ, id, key string
	start, end   time.Time
}

// TestLimitsAcrossWorkers runs three worker processes whose task types
// declare a rate limit, a concurrency cap and a per-key cap, on one Redis
// and on the Cluster, with far more tasks than the limits let through at
// once. From the start and end each handler logs it checks that the
// observed rate and concurrency never exceed the limits, that the
// throughput stays within 10% of the rate limit, that no postponement
// counted a retry, and that /metrics counts the postponements the log
// lines show.
func TestLimitsAcrossWorkers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		giveURL   func(testing.TB) string
		wantFlush bool
	}{
		{name: "single", giveURL: func(tb testing.TB) string { return redistest.URL(tb, 52) }, wantFlush: true},
		{name: "cluster", giveURL: redistest.ClusterURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := tt.giveURL(t)
			name := uniqueName(t) // the queue, the types' prefix and the task ids'
			m := manager(t, url, nil)
			if tt.wantFlush {
				if err := m.Client().FlushDB(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				removeQueue(t, m, name, name)
				removeLimitKeys(t, m, name)
			})

			bin := proctest.Build(t, limitWorkerPackage)
			ws := make([]*proctest.Proc, limitWorkers)
			addrs := make([]string, limitWorkers)
			for i := range ws {
				addrs[i] = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
				ws[i] = proctest.Start(t, bin, workerEnv(url, name,
					"WORKER_CONCURRENCY="+strconv.Itoa(limitPerProcs), "LIMIT_TEST_PREFIX="+name,
					"HTTP_ADDR="+addrs[i], "HTTP_RATE_LIMIT=off"))
			}
			for _, w := range ws {
				if w.WaitForMsg("worker started", startTimeout) == nil {
					t.Fatalf("%s did not log \"worker started\" within %v", w, startTimeout)
				}
			}

			client := asynq.NewClientFromRedisClient(m.Client())
			insp := asynq.NewInspectorFromRedisClient(m.Client())
			enqueue := func(typ string, n int, sleepMS int, key func(i int) string) {
				t.Helper()
				for i := range n {
					p := map[string]any{"sleep_ms": sleepMS}
					if key != nil {
						p["key"] = key(i)
					}
					b, _ := json.Marshal(p)
					_, err := client.EnqueueContext(ctx, asynq.NewTask(name+":"+typ, b),
						asynq.Queue(name), asynq.TaskID(fmt.Sprintf("%s-%s-%d", name, typ, i)),
						asynq.Retention(time.Hour), asynq.MaxRetry(0)) // a postponement counted as a failure would archive it
					if err != nil {
						t.Fatal(err)
					}
				}
			}

			// The rate: 140 tasks at 20 per second take 6 s after the
			// first burst of 20.
			const rated = 140
			enqueue("rated", rated, 5, nil)
			waitCompleted(t, insp, name, rated, 2*time.Minute)
			// The caps, one after the other: 3 at once, 300 ms each.
			const capped = 30
			enqueue("capped", capped, 300, nil)
			waitCompleted(t, insp, name, rated+capped, 2*time.Minute)
			// 1 at once per key, 4 keys, 200 ms each.
			const keyed = 24
			enqueue("keyed", keyed, 200, func(i int) string { return "customer-" + strconv.Itoa(i%4) })
			waitCompleted(t, insp, name, rated+capped+keyed, 2*time.Minute)

			metrics := make([]string, len(addrs))
			for i, a := range addrs {
				metrics[i] = scrape(t, "http://"+a+"/metrics")
			}
			stopWorkers(t, ws) // flushes their logs
			if failed := failedLines(ws); len(failed) > 0 {
				t.Errorf("%d tasks failed or were interrupted:\n%v", len(failed), failed)
			}

			// No postponement counted a retry.
			infos, err := insp.ListCompletedTasks(name, asynq.PageSize(rated+capped+keyed+10))
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != rated+capped+keyed {
				t.Errorf("%d completed tasks, want %d", len(infos), rated+capped+keyed)
			}
			for _, ti := range infos {
				if ti.Retried != 0 {
					t.Errorf("task %s: retried %d times, want 0 (postponements count no retry)", ti.ID, ti.Retried)
				}
			}

			lines := ranLines(t, ws)
			byType := map[string][]ranLine{}
			for _, l := range lines {
				byType[strings.TrimPrefix(l.typ, name+":")] = append(byType[strings.TrimPrefix(l.typ, name+":")], l)
			}
			for typ, want := range map[string]int{"rated": rated, "capped": capped, "keyed": keyed} {
				if got := len(byType[typ]); got != want {
					t.Errorf("%s: %d handler calls, want %d (each task once)", typ, got, want)
				}
			}

			checkRate(t, byType["rated"])
			checkConcurrency(t, "capped", byType["capped"], limitCapped, true)
			perKey := map[string][]ranLine{}
			for _, l := range byType["keyed"] {
				perKey[l.key] = append(perKey[l.key], l)
			}
			for key, ls := range perKey {
				checkConcurrency(t, "keyed "+key, ls, limitPerKey, false)
			}

			// Every postponement has its log line and is counted in
			// /metrics, by reason.
			logged := map[string]int{}
			for _, w := range ws {
				for _, l := range w.LogLinesWithMsg("task postponed") {
					typ, _ := l["task_type"].(string)
					reason, _ := l["reason"].(string)
					if r, _ := l["retry"].(float64); r != 0 {
						t.Errorf("postponed line with retry %v: %v", r, l)
					}
					logged[strings.TrimPrefix(typ, name+":")+" "+reason]++
				}
			}
			counted := map[string]int{}
			for _, text := range metrics {
				for k, v := range postponedSeries(text, name) {
					counted[k] += v
				}
			}
			t.Logf("postponements: logged %v, counted in /metrics %v", logged, counted)
			for _, k := range []string{"rated rate", "capped concurrency", "keyed concurrency_key"} {
				if logged[k] == 0 {
					t.Errorf("no %q postponement logged: the test did not reach the limit", k)
				}
			}
			if d := fmt.Sprint(logged); d != fmt.Sprint(counted) {
				t.Errorf("postponements logged %v, counted in /metrics %v", logged, counted)
			}
		})
	}
}

// checkRate wants the starts of ls to conform to the GCRA limit of
// PREFIX:rated (at most limitBurst + limitRate·d/s over any interval d,
// allowing startSlack), and the throughput after the first burst within
// 10% of limitRate.
func checkRate(t *testing.T, ls []ranLine) {
	t.Helper()
	if len(ls) <= limitBurst {
		t.Fatalf("rated: %d starts, too few to measure", len(ls))
	}
	starts := make([]time.Time, len(ls))
	for i, l := range ls {
		starts[i] = l.start
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	per1s, worst := 0, ""
	for i := range starts {
		for j := i; j < len(starts); j++ {
			d := starts[j].Sub(starts[i])
			allowed := limitBurst + int((d+startSlack).Seconds()*limitRate)
			if n := j - i + 1; n > allowed {
				t.Errorf("rated: %d starts within %v (from %s), over the limit's %d", n, d, starts[i].Format("15:04:05.000"), allowed)
				return
			}
			if d < time.Second {
				if n := j - i + 1; n > per1s {
					per1s, worst = n, starts[i].Format("15:04:05.000")
				}
			}
		}
	}
	span := starts[len(starts)-1].Sub(starts[0])
	steady := float64(len(starts)-limitBurst) / span.Seconds()
	t.Logf("rated: %d starts over %v: %.2f/s after the first burst of %d (limit %d/s), %.2f/s overall; at most %d within 1 s (from %s; the limit allows %d: a burst, then %d/s)",
		len(starts), span.Round(time.Millisecond), steady, limitBurst, limitRate, float64(len(starts))/span.Seconds(), per1s, worst, 2*limitBurst-1, limitRate)
	// Within 10% of the limit (BENCHMARKS.md: 19.8 to 19.9/s for 20/s).
	// Race-instrumented worker binaries, on a CI machine busy with every
	// other package's tests, wake the waiting tasks later: 20% then.
	// Exceeding the limit is never allowed (above).
	low := 0.9
	if proctest.Race() {
		low = 0.8
	}
	if steady < low*limitRate || steady > 1.1*limitRate {
		t.Errorf("rated: throughput %.2f/s after the first burst, want within %.0f%% of %d/s", steady, 100*(1-low), limitRate)
	}
}

// checkConcurrency wants at most limit of ls running at once; with
// wantBusy, the limit's slots busy at least 80% of the time from the
// first start to the last end.
func checkConcurrency(t *testing.T, what string, ls []ranLine, limit int, wantBusy bool) {
	t.Helper()
	type event struct {
		at    time.Time
		delta int
	}
	var evs []event
	var busy time.Duration
	first, last := ls[0].start, ls[0].end
	for _, l := range ls {
		evs = append(evs, event{l.start, +1}, event{l.end, -1})
		busy += l.end.Sub(l.start)
		first, last = minTime(first, l.start), maxTime(last, l.end)
	}
	// Ends before starts at the same instant: a slot freed, then taken.
	slices.SortFunc(evs, func(a, b event) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta
	})
	running, most := 0, 0
	for _, e := range evs {
		running += e.delta
		most = max(most, running)
	}
	if most > limit {
		t.Errorf("%s: %d running at once, over the limit of %d", what, most, limit)
	}
	span := last.Sub(first)
	use := busy.Seconds() / (float64(limit) * span.Seconds())
	t.Logf("%s: %d tasks, at most %d at once (limit %d), slots busy %.0f%% of %v",
		what, len(ls), most, limit, 100*use, span.Round(time.Millisecond))
	if wantBusy && use < 0.8 {
		t.Errorf("%s: slots busy %.0f%% of the time, want at least 80%%", what, 100*use)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ranLines returns the "limit task ran" lines of ws.
func ranLines(t *testing.T, ws []*proctest.Proc) []ranLine {
	t.Helper()
	var out []ranLine
	for _, w := range ws {
		for _, l := range w.LogLinesWithMsg("limit task ran") {
			id, _ := l["task_id"].(string) // "<name>-<typ>-<i>": it names the type
			key, _ := l["key"].(string)
			s, _ := l["start_us"].(float64)
			e, _ := l["end_us"].(float64)
			out = append(out, ranLine{typ: typeOfID(id), id: id, key: key,
				start: time.UnixMicro(int64(s)), end: time.UnixMicro(int64(e))})
		}
	}
	return out
}

// typeOfID returns the type of a task id "<name>-<typ>-<i>" as
// "<name>:<typ>".
func typeOfID(id string) string {
	i := strings.LastIndexByte(id, '-')
	j := strings.LastIndexByte(id[:max(i, 0)], '-')
	if i < 0 || j < 0 {
		return id
	}
	return id[:j] + ":" + id[j+1:i]
}

// scrape returns the body of GET url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// postponedSeries returns the non-zero forgeq_tasks_postponed_total
// series of the types named name:* in a /metrics text, as "<typ> <reason>".
func postponedSeries(text, name string) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "forgeq_tasks_postponed_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		var typ, reason string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "task_type":
				typ = strings.TrimPrefix(v, name+":")
			case "reason":
				reason = v
			}
		}
		n, _ := strconv.ParseFloat(value, 64)
		if n > 0 {
			out[typ+" "+reason] += int(n)
		}
	}
	return out
}

// removeLimitKeys deletes the limiter's keys of the types named name:*.
func removeLimitKeys(t *testing.T, m *cachemgr.Manager, name string) {
	t.Helper()
	ctx := context.Background()
	for _, typ := range []string{"rated", "capped", "keyed"} {
		tag := "{" + name + ":" + typ + "}"
		keys := []string{"rate:forgeq:limit:" + tag + ":rate", "forgeq:limit:" + tag + ":running", "forgeq:limit:" + tag + ":running:waiting"}
		for i := range 4 {
			k := "forgeq:limit:" + tag + ":key:customer-" + strconv.Itoa(i)
			keys = append(keys, k, k+":waiting")
		}
		if err := m.Client().Del(ctx, keys...).Err(); err != nil {
			t.Logf("delete the limit keys of %s: %v", tag, err)
		}
	}
}

// TestLimitsSlotsOfKilledWorker kills a worker holding every slot of a
// capped type: the slots free themselves once their leases, renewed every
// 10 s while the handlers ran, expire (30 s), and a task waiting for one
// then runs on another worker, not before.
func TestLimitsSlotsOfKilledWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := proctest.RedisServer(t).URL()
	name := uniqueName(t)
	m := manager(t, url, nil)
	bin := proctest.Build(t, limitWorkerPackage)
	env := workerEnv(url, name, "WORKER_CONCURRENCY=5", "LIMIT_TEST_PREFIX="+name)
	a := proctest.Start(t, bin, env)
	if a.WaitForMsg("worker started", startTimeout) == nil {
		t.Fatalf("%s did not start", a)
	}
	client := asynq.NewClientFromRedisClient(m.Client())
	enqueue := func(id string, sleepMS int) {
		t.Helper()
		// MaxRetry(0): a task of the dead worker is archived by asynq's
		// recoverer rather than run again.
		_, err := client.EnqueueContext(ctx, asynq.NewTask(name+":capped", []byte(`{"sleep_ms":`+strconv.Itoa(sleepMS)+`}`)),
			asynq.Queue(name), asynq.TaskID(id), asynq.MaxRetry(0), asynq.Retention(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range limitCapped {
		enqueue(fmt.Sprintf("%s-held-%d", name, i), 600_000)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(a.LogLinesWithMsg("limit task started")) < limitCapped {
		if time.Now().After(deadline) {
			t.Fatalf("%s started %d tasks, want %d", a, len(a.LogLinesWithMsg("limit task started")), limitCapped)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Kill()
	killed := time.Now()

	b := proctest.Start(t, bin, env)
	if b.WaitForMsg("worker started", startTimeout) == nil {
		t.Fatalf("%s did not start", b)
	}
	after := name + "-after"
	enqueue(after, 10)
	var started time.Time
	deadline = killed.Add(leaseBound)
	for started.IsZero() {
		for _, l := range b.LogLinesWithMsg("limit task started") {
			if l["task_id"] == after {
				started = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not start within %v of the kill: the dead worker's slots were not freed", after, leaseBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waited := started.Sub(killed)
	t.Logf("the dead worker's slots freed; the waiting task started %v after the kill", waited.Round(time.Millisecond))
	// The leases were renewed at most 10 s before the kill and live 30 s.
	if waited < 19*time.Second {
		t.Errorf("task %s started %v after the kill: the cap of %d was not held", after, waited, limitCapped)
	}
	postponed := 0
	for _, l := range b.LogLinesWithMsg("task postponed") {
		if l["task_id"] == after {
			postponed++
		}
	}
	if postponed == 0 {
		t.Errorf("task %s was never postponed", after)
	}
}

// leaseBound is how long after its worker died a concurrency lease is
// gone at most (30 s), plus the time for the waiting task to come back.
const leaseBound = 40 * time.Second
