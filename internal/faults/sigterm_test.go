package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// TestSIGTERMBurst sends SIGTERM to a worker in the middle of a burst of
// 200 tasks and of cache-aside requests for cold keys. Every task has
// completed or is back in its queue (none active, archived or lost), a
// second worker completes the rest, each task completed once; every
// request answered 200 has its value in Redis.
func TestSIGTERMBurst(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	const (
		n               = 200
		shutdownTimeout = 2 * time.Second
		httpTimeout     = 5 * time.Second
	)
	env := []string{
		"WORKER_CONCURRENCY=8", "WORKER_QUEUES=default=1",
		"WORKER_SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
		"HTTP_SHUTDOWN_TIMEOUT=" + httpTimeout.String(),
	}
	w1 := startWorker(t, url, env...)

	// Mostly short tasks; every 25th, from the 21st, runs longer than the
	// shutdown timeout: the 21st starts before SIGTERM (which comes after
	// 30 tasks are done), is cut off and goes back to the queue.
	short, long := workFor(40*time.Millisecond), workFor(5*time.Second)
	ids := enqueueFile(t, url, processTasks("burst", n, func(i int) int {
		if i%25 == 20 {
			return long
		}
		return short
	}))

	cacheWork := min(workFor(30*time.Millisecond), web.MaxComputeWork)
	load := startCacheLoad(w1.base, "cold", cacheWork, 16)
	if !waitUntil(60*time.Second, 10*time.Millisecond, func() bool {
		return len(w1.LogLinesWithMsg(msgDone)) >= 30 && load.ok() >= 30
	}) {
		t.Fatalf("the burst did not get going: %d tasks done, %d cache answers", len(w1.LogLinesWithMsg(msgDone)), load.ok())
	}
	sigterm := time.Now()
	code := w1.stop(t, shutdownTimeout+httpTimeout+20*time.Second)
	exited := time.Since(sigterm)
	results := load.stop()
	if code != 0 {
		t.Errorf("first worker exited %d after SIGTERM, want 0", code)
	}
	t.Logf("first worker exited %v after SIGTERM", exited.Round(time.Millisecond))

	// Tasks: done or back in the queue, nothing else.
	infos := taskInfos(t, in, "default", ids)
	states := countStates(infos)
	t.Logf("after the first worker: %v", states)
	for _, id := range ids {
		info, ok := infos[id]
		switch {
		case !ok:
			t.Errorf("task %s lost", id)
		case info.State != asynq.TaskStateCompleted && info.State != asynq.TaskStatePending:
			t.Errorf("task %s is %v (last error %q), want completed or pending", id, info.State, info.LastErr)
		}
	}
	if q, err := in.GetQueueInfo("default"); err != nil || q.Active != 0 || q.Archived != 0 || q.Retry != 0 {
		t.Errorf("queue after shutdown: %+v, %v; want nothing active, archived or to retry", q, err)
	}
	if states[asynq.TaskStateCompleted] == 0 || states[asynq.TaskStatePending] == 0 {
		t.Errorf("states %v: the test wants tasks on both sides of SIGTERM", states)
	}
	l1 := readLedger(t, w1.Proc)
	interrupted := l1.count(msgInterrupted)
	t.Logf("first worker: %s", l1.summary())
	for id, info := range infos {
		if info.State == asynq.TaskStateCompleted && len(l1.done(id)) != 1 {
			t.Errorf("task %s completed with log lines %v, want one %q", id, l1[id], msgDone)
		}
	}

	checkCacheWrites(t, rdb, results, sigterm, cacheWork)

	// A second worker completes the rest.
	w2 := startWorker(t, url, env...)
	waitCompleted(t, in, "default", ids, 2*time.Minute)
	l := readLedger(t, w1.Proc, w2.Proc)
	t.Logf("both workers: %s", l.summary())
	l.checkDoneOnce(t, ids)
	l.checkNoOverlap(t)
	for id, info := range taskInfos(t, in, "default", ids) {
		if info.Retried != 0 {
			t.Errorf("task %s: retried %d, want 0 (going back to the queue at shutdown is no retry)", id, info.Retried)
		}
		var res tasks.ProcessDataResult
		if err := json.Unmarshal(info.Result, &res); err != nil || res.Key != id || res.Value == "" {
			t.Errorf("task %s: result %s (%v)", id, info.Result, err)
		}
	}
	if interrupted == 0 {
		t.Log("no task was cut off by the shutdown timeout this time")
	}
	if code := w2.stop(t, 30*time.Second); code != 0 {
		t.Errorf("second worker exited %d after SIGTERM, want 0", code)
	}
}

// cacheResult is one request of a cacheLoad.
type cacheResult struct {
	key        string
	status     int
	body       []byte
	err        error
	start, end time.Time
}

// cacheLoad sends GET /api/cache/{key} for ever new keys from several
// clients at once until stopped.
type cacheLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    []cacheResult
	oks    int
}

func startCacheLoad(base, prefix string, work, clients int) *cacheLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &cacheLoad{cancel: cancel}
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("%s:%d:%d", prefix, c, i)
				r := cacheResult{key: key, start: time.Now()}
				// Not bound to ctx: a request in flight when the load
				// stops runs to its end.
				res := get(fmt.Sprintf("%s/api/cache/%s?work=%d", base, key, work), 30*time.Second)
				r.status, r.body, r.err, r.end = res.status, res.body, res.err, time.Now()
				l.mu.Lock()
				l.res = append(l.res, r)
				if r.status == http.StatusOK {
					l.oks++
				}
				l.mu.Unlock()
				if res.err != nil {
					time.Sleep(10 * time.Millisecond) // the server is gone; don't spin
				}
			}
		}()
	}
	return l
}

// ok returns how many requests were answered 200 so far.
func (l *cacheLoad) ok() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.oks
}

// stop ends the load and returns every result.
func (l *cacheLoad) stop() []cacheResult {
	l.cancel()
	l.wg.Wait()
	return l.res
}

// checkCacheWrites checks that the value of every request answered 200 is
// in Redis, and that some were in flight at SIGTERM.
func checkCacheWrites(t *testing.T, rdb *redis.Client, results []cacheResult, sigterm time.Time, work int) {
	t.Helper()
	var (
		oks, inFlight, refused int
		other                  = map[int]int{}
	)
	for _, r := range results {
		switch {
		case r.err != nil:
			refused++
			continue
		case r.status != http.StatusOK:
			other[r.status]++
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("GET /api/cache/%s: %d %s", r.key, r.status, r.body)
			}
			continue
		}
		oks++
		if r.start.Before(sigterm) && r.end.After(sigterm) {
			inFlight++
		}
		var body struct{ Key, Data, Source string }
		if err := json.Unmarshal(r.body, &body); err != nil || body.Key != r.key {
			t.Errorf("GET /api/cache/%s: body %s (%v)", r.key, r.body, err)
			continue
		}
		if want := tasks.Digest(r.key, work); body.Data != want || body.Source != tasks.SourceComputed {
			t.Errorf("GET /api/cache/%s: %+v, want the computed digest %s", r.key, body, want)
		}
		got, err := rdb.Get(context.Background(), "cache:"+r.key).Result()
		switch {
		case errors.Is(err, redis.Nil):
			t.Errorf("GET /api/cache/%s answered 200 at %v but the key is not in Redis",
				r.key, r.end.Sub(sigterm).Round(time.Millisecond))
		case err != nil:
			t.Fatal(err)
		case got != body.Data:
			t.Errorf("cache:%s is %q, the answer was %q", r.key, got, body.Data)
		}
	}
	t.Logf("cache-aside requests: %d answered 200 (%d of them in flight at SIGTERM), other answers %v, %d failed to connect or were cut",
		oks, inFlight, other, refused)
	if inFlight == 0 {
		t.Error("no cache request was in flight at SIGTERM and answered 200")
	}
}
