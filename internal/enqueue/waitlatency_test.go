package enqueue

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
)

// Databases of the real test Redis that the latency test and benchmark
// use.
const (
	dbLatencyBench = 47 // BenchmarkWaitLatency
	dbLatencyTest  = 48 // TestWaitFollowsEvents
)

// latencyQueue is the queue of the latency measurements' own server.
const latencyQueue = "latency"

// typeSteps is the task type of the latency measurements.
const typeSteps = "bench:steps"

// barMark matches the mark of report i in a progress message, as the bar
// on stderr draws it.
var barMark = regexp.MustCompile(`<r([0-9]+)>`)

// barWatch is the stderr of a --wait: it notes when the bar first draws
// the mark of each report.
type barWatch struct {
	mu   sync.Mutex
	seen map[int]time.Time
	cond *sync.Cond
}

func newBarWatch() *barWatch {
	w := &barWatch{seen: make(map[int]time.Time)}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *barWatch) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range barMark.FindAllSubmatch(p, -1) {
		i, _ := strconv.Atoi(string(m[1]))
		if _, ok := w.seen[i]; !ok {
			w.seen[i] = now
		}
	}
	w.cond.Broadcast()
	return len(p), nil
}

// waitFor returns when the bar drew report i, or false after d.
func (w *barWatch) waitFor(i int, d time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(d)
	stop := time.AfterFunc(d, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if at, ok := w.seen[i]; ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		w.cond.Wait()
	}
}

// measureWait runs a task of n progress reports on a server of its own
// on url, with the worker's task events on, and follows it with --wait's
// wait (events), or its pollWait (poll set), drawing the bar. After each
// report (tasks.Deps.ReportProgress) the handler waits until the bar has
// drawn it, then a random pause of up to jitter, so that the reports fall
// anywhere between two polls; it returns, for each report, the time from
// the call to ReportProgress to the bar's drawing it.
//
// stateCheck, when not 0, replaces wait's state check interval.
func measureWait(tb testing.TB, url string, n int, poll bool, jitter, stateCheck time.Duration) []time.Duration {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	defer m.Close()
	pub := events.NewPublisher(m.Client(), events.PublisherOptions{})
	defer pub.Close()
	// The queue has an event stream, as one served by workers with events
	// on does: wait counts on the events (with no stream it would also
	// poll the state).
	pub.Publish(events.Event{Kind: events.Enqueued, Queue: latencyQueue, TaskID: "another"})
	if err := pub.Flush(context.Background()); err != nil {
		tb.Fatal(err)
	}

	bar := newBarWatch()
	lat := make([]time.Duration, n)
	deps := tasks.Deps{Cache: m}
	mux := asynq.NewServeMux()
	mux.Use(publishEvents(pub))
	mux.HandleFunc(typeSteps, func(ctx context.Context, _ *asynq.Task) error {
		for i := range n {
			if jitter > 0 {
				time.Sleep(rand.N(jitter))
			}
			start := time.Now()
			if err := deps.ReportProgress(ctx, float64(i*100/n), fmt.Sprintf("<r%d>", i)); err != nil {
				return err
			}
			at, ok := bar.waitFor(i, 10*time.Second)
			if !ok {
				return fmt.Errorf("the bar did not draw report %d within 10s", i)
			}
			lat[i] = at.Sub(start)
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{latencyQueue: 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   time.Second,
		Logger:            zaptest.NewLogger(tb).Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		tb.Fatal(err)
	}
	defer srv.Shutdown()

	c := &cli{prog: "enqueue", stdout: io.Discard, stderr: bar, now: time.Now, stateCheck: stateCheck}
	c.f.progress = "always"
	k := &conn{m: m, insp: asynq.NewInspectorFromRedisClient(m.Client()), log: zap.NewNop(),
		cfg: config.Config{Worker: config.Worker{Events: true}}}
	info, err := asynq.NewClientFromRedisClient(m.Client()).EnqueueContext(context.Background(),
		asynq.NewTask(typeSteps, nil), asynq.Queue(latencyQueue), asynq.MaxRetry(0), asynq.Retention(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	wait := c.wait
	if poll {
		wait = c.pollWait
	}
	// Bounded, so that a report that never reaches the bar fails soon.
	if err := wait(context.Background(), k, info, time.Duration(n)*(jitter+time.Second)+30*time.Second); err != nil {
		tb.Fatalf("wait: %v", err)
	}
	return lat
}

// percentile returns the p-th percentile (0 to 100) of sorted d, nearest
// rank.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p/100+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// TestWaitFollowsEvents checks that --wait's bar draws each progress
// report from the task's events: with the state read once an hour (but
// for the early check), each of 20 reports still reaches the bar, which the
// handler waits for before its next report.
func TestWaitFollowsEvents(t *testing.T) {
	tb := setup(t, dbLatencyTest)
	// A report the bar does not draw within 10s fails the task, and the
	// wait with it (a fatal error).
	measureWait(t, tb.url, 20, false, 0, time.Hour)
}

// BenchmarkWaitLatency measures the time from a handler's progress report
// (tasks.Deps.ReportProgress) to --wait's bar drawing it, on the real test
// Redis, over 200 reports made at random times (a pause of up to pollMax
// before each): following the task's events (wait) against polling its
// state (pollWait, as --wait did before). It reports the p50 and p99 in
// milliseconds; the target is a p99 under 20ms with events.
// BENCHMARKS.md has the figures:
//
//	go test -run '^$' -bench WaitLatency -benchtime 1x -v ./internal/enqueue
func BenchmarkWaitLatency(b *testing.B) {
	const reports = 200
	tb := setup(b, dbLatencyBench)
	for _, mode := range []struct {
		name string
		poll bool
	}{{"poll", true}, {"events", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var all []time.Duration
			for b.Loop() {
				all = append(all, measureWait(b, tb.url, reports, mode.poll, pollMax, 0)...)
			}
			slices.Sort(all)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(percentile(all, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(all, 99)), "p99-ms")
			b.ReportMetric(ms(all[len(all)-1]), "max-ms")
			b.Logf("%s: %d reports: p50 %v, p99 %v, max %v", mode.name, len(all),
				percentile(all, 50).Round(10*time.Microsecond), percentile(all, 99).Round(10*time.Microsecond),
				all[len(all)-1].Round(10*time.Microsecond))
		})
	}
}
