package schedule_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// pingPayload is the payload of the test type.
type pingPayload struct {
	N int `json:"n"`
}

// Validate keeps N in range.
func (p pingPayload) Validate() error {
	if p.N < 1 {
		return errors.New("n must be at least 1")
	}
	return nil
}

// testRegistry has one type, test:ping, on queue "low".
func testRegistry(tb testing.TB) *tasks.Registry {
	tb.Helper()
	reg, err := tasks.NewRegistry(tasks.Define("test:ping", "a test type",
		func(context.Context, tasks.Deps, pingPayload) ([]byte, error) { return nil, nil }, asynq.Queue("low")))
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

type testBundle struct {
	rdb   redis.UniversalClient
	store *schedule.Store
}

// setupOn returns a bundle on rdb, with no entries and no history of the
// test's entries.
func setupOn(tb testing.TB, rdb redis.UniversalClient) testBundle {
	tb.Helper()
	for _, key := range []string{schedule.Key, schedule.HistoryKeyPrefix + "p"} {
		if err := rdb.Del(context.Background(), key).Err(); err != nil {
			tb.Fatal(err)
		}
	}
	return testBundle{rdb: rdb, store: schedule.NewStore(rdb, workflow.RegistryTypes(testRegistry(tb)))}
}

// backends runs f on miniredis and on the real Redis (DB 55).
func backends(t *testing.T, f func(t *testing.T, setup func(testing.TB) testBundle)) {
	t.Run("miniredis", func(t *testing.T) {
		f(t, func(tb testing.TB) testBundle {
			mr := miniredis.RunT(tb)
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			tb.Cleanup(func() { rdb.Close() })
			return setupOn(tb, rdb)
		})
	})
	t.Run("redis", func(t *testing.T) {
		url := redistest.URL(t, 55)
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		f(t, func(tb testing.TB) testBundle {
			rdb := redis.NewClient(opts)
			tb.Cleanup(func() { rdb.Close() })
			return setupOn(tb, rdb)
		})
	})
	// The store's keys are fixed: only this test uses them on the
	// cluster.
	t.Run("cluster", func(t *testing.T) {
		p, err := redisurl.Parse(redistest.ClusterURL(t))
		if err != nil {
			t.Fatal(err)
		}
		f(t, func(tb testing.TB) testBundle {
			rdb := p.NewClient(redisurl.Settings{})
			tb.Cleanup(func() { rdb.Close() })
			return setupOn(tb, rdb)
		})
	})
}

func TestPutChecks(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	st := schedule.NewStore(rdb, workflow.RegistryTypes(testRegistry(t)))
	ok := schedule.Entry{Name: "p", Spec: "@every 5s", Type: "test:ping", Payload: json.RawMessage(`{"n":1}`)}
	tests := []struct {
		name    string
		give    func(e *schedule.Entry)
		wantErr string
	}{
		{"no name", func(e *schedule.Entry) { e.Name = "" }, "no name"},
		{"bad name", func(e *schedule.Entry) { e.Name = "a b" }, `name "a b" has a character outside`},
		{"long name", func(e *schedule.Entry) { e.Name = strings.Repeat("n", 101) }, "over the 100-byte limit"},
		{"no spec", func(e *schedule.Entry) { e.Spec = "" }, "no spec"},
		{"bad spec", func(e *schedule.Entry) { e.Spec = "every minute" }, `spec "every minute"`},
		{"sub-second", func(e *schedule.Entry) { e.Spec = "@every 500ms" }, "whole number of seconds"},
		{"never", func(e *schedule.Entry) { e.Spec = "0 0 30 2 *" }, "never matches a date"},
		{"unknown type", func(e *schedule.Entry) { e.Type = "test:pong" }, `unknown task type "test:pong"`},
		{"payload not an object", func(e *schedule.Entry) { e.Payload = json.RawMessage(`[1]`) }, "is not a JSON object"},
		{"payload refused", func(e *schedule.Entry) { e.Payload = json.RawMessage(`{"n":0}`) }, "n must be at least 1"},
		{"unknown field", func(e *schedule.Entry) { e.Payload = json.RawMessage(`{"n":1,"m":2}`) }, `unknown field "m"`},
		{"bad queue", func(e *schedule.Entry) { e.Queue = "a queue" }, "queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.give(&e)
			_, _, err := st.Put(context.Background(), e)
			if !errors.Is(err, schedule.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Put = %v, want ErrInvalid with %q", err, tt.wantErr)
			}
		})
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("refused entries wrote %v", keys)
	}
	if _, _, err := schedule.NewStore(rdb, nil).Put(context.Background(), ok); !errors.Is(err, schedule.ErrInvalid) {
		t.Errorf("Put without types = %v, want ErrInvalid", err)
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, setup func(testing.TB) testBundle) {
		ctx := context.Background()
		b := setup(t)
		st := b.store

		if v, err := st.Version(ctx); err != nil || v != 0 {
			t.Fatalf("Version of nothing = %d, %v", v, err)
		}
		e, created, err := st.Put(ctx, schedule.Entry{Name: "p", Spec: " @every 5s ", Type: "test:ping", Payload: json.RawMessage(`{ "n": 1 }`)})
		if err != nil || !created {
			t.Fatalf("Put = %v, created %v", err, created)
		}
		want := schedule.Entry{Name: "p", Spec: "@every 5s", Type: "test:ping", Payload: json.RawMessage(`{"n":1}`)}
		ignoreUpdated := cmpopts.IgnoreFields(schedule.Entry{}, "Updated")
		if d := cmp.Diff(want, e, ignoreUpdated); d != "" || e.Updated.IsZero() {
			t.Errorf("Put stored (-want +got)\n%s (updated %v)", d, e.Updated)
		}
		_, created, err = st.Put(ctx, schedule.Entry{Name: "p", Spec: "@every 10s", Type: "test:ping", Payload: json.RawMessage(`{"n":2}`), Queue: "critical"})
		if err != nil || created {
			t.Fatalf("second Put = %v, created %v", err, created)
		}
		if _, _, err := st.Put(ctx, schedule.Entry{Name: "a", Spec: "@hourly", Type: "test:ping", Payload: json.RawMessage(`{"n":3}`), Paused: true}); err != nil {
			t.Fatal(err)
		}
		v1, _ := st.Version(ctx)
		if v1 != 3 {
			t.Errorf("Version after three puts = %d", v1)
		}

		got, err := st.Get(ctx, "p")
		if err != nil || got.Spec != "@every 10s" || got.Queue != "critical" {
			t.Errorf("Get = %+v, %v", got, err)
		}
		if _, err := st.Get(ctx, "nope"); !errors.Is(err, schedule.ErrNotFound) {
			t.Errorf("Get of nothing = %v", err)
		}
		if _, err := st.Get(ctx, schedule.VersionField); !errors.Is(err, schedule.ErrNotFound) {
			t.Errorf("Get of the version field = %v", err)
		}

		// Pause and resume; pausing twice changes nothing.
		if e, err := st.Pause(ctx, "p"); err != nil || !e.Paused {
			t.Fatalf("Pause = %+v, %v", e, err)
		}
		v2, _ := st.Version(ctx)
		if _, err := st.Pause(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if v3, _ := st.Version(ctx); v2 == v1 || v3 != v2 {
			t.Errorf("versions %d, %d, %d: want a change on pause and none on a second pause", v1, v2, v3)
		}
		if e, err := st.Resume(ctx, "p"); err != nil || e.Paused {
			t.Fatalf("Resume = %+v, %v", e, err)
		}
		for _, f := range []func(context.Context, string) (schedule.Entry, error){st.Pause, st.Resume} {
			if _, err := f(ctx, "nope"); !errors.Is(err, schedule.ErrNotFound) {
				t.Errorf("pause or resume of nothing = %v", err)
			}
		}

		// A tick a worker enqueued: its history, as asynq keeps it.
		prev := time.Now().Add(-5 * time.Second).Truncate(time.Second)
		if err := b.rdb.ZAdd(ctx, schedule.HistoryKeyPrefix+"p", redis.Z{Score: float64(prev.Unix()), Member: "event"}).Err(); err != nil {
			t.Fatal(err)
		}
		// Something else wrote a field: skipped.
		if err := b.rdb.HSet(ctx, schedule.Key, "junk", "{").Err(); err != nil {
			t.Fatal(err)
		}
		list, err := st.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "a" || list[1].Name != "p" {
			t.Fatalf("List = %+v", list)
		}
		if !list[0].Paused || !list[0].Next.IsZero() || !list[0].Prev.IsZero() {
			t.Errorf("paused entry: %+v", list[0])
		}
		if p := list[1]; p.Next.Before(time.Now()) || p.Next.Unix()%10 != 0 || !p.Prev.Equal(prev) {
			t.Errorf("entry p: next %v, prev %v (want %v)", p.Next, p.Prev, prev)
		}

		if err := st.Remove(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if err := st.Remove(ctx, "p"); !errors.Is(err, schedule.ErrNotFound) {
			t.Errorf("second Remove = %v", err)
		}
		if n, _ := b.rdb.Exists(ctx, schedule.HistoryKeyPrefix+"p").Result(); n != 0 {
			t.Error("Remove left the history")
		}
		entries, v, err := st.Entries(ctx)
		if err != nil || len(entries) != 1 || entries[0].Name != "a" {
			t.Errorf("Entries = %+v, %v", entries, err)
		}
		if cur, _ := st.Version(ctx); v != cur {
			t.Errorf("Entries version %d, Version %d", v, cur)
		}
	})
}

func TestNext(t *testing.T) {
	t.Parallel()

	at := time.Date(2031, 3, 4, 12, 0, 10, 0, time.UTC)
	tests := []struct {
		giveSpec string
		want     time.Time
	}{
		{"@every 30s", at.Add(20 * time.Second)},
		{"*/15 * * * *", time.Date(2031, 3, 4, 12, 15, 0, 0, time.UTC)},
		{"CRON_TZ=Asia/Tokyo 0 9 * * *", time.Date(2031, 3, 5, 0, 0, 0, 0, time.UTC)},
		{"0 0 30 2 *", time.Time{}},
	}
	for _, tt := range tests {
		got, err := schedule.Next(tt.giveSpec, at)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("Next(%q) = %v, %v; want %v", tt.giveSpec, got, err, tt.want)
		}
	}
	if _, err := schedule.Next("nope", at); err == nil {
		t.Error("Next of a bad spec: no error")
	}
}
