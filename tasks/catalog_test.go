package tasks_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// catalogDB is the database of the test Redis this package's catalogue
// tests use (with the ACL user too); the worker package's use 17.
const catalogDB = 16

// fakeClock is a clock the tests move by hand; safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// t0 is when the catalogue tests start.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// catalogBundle is a catalogue on a fresh miniredis with a fake clock.
type catalogBundle struct {
	mr    *miniredis.Miniredis
	rdb   redis.UniversalClient
	cat   *tasks.Catalog
	clock *fakeClock
}

func setupCatalog(tb testing.TB) *catalogBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	clock := &fakeClock{t: t0}
	return &catalogBundle{mr: mr, rdb: rdb, cat: tasks.NewCatalog(rdb, tasks.WithClock(clock.now)), clock: clock}
}

// registry returns a registry of defs.
func registry(tb testing.TB, defs ...tasks.Declared) *tasks.Registry {
	tb.Helper()
	reg, err := tasks.NewRegistry(defs...)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// publish publishes reg as worker id and returns the report.
func (b *catalogBundle) publish(tb testing.TB, reg *tasks.Registry, w tasks.WorkerInfo) tasks.PublishReport {
	tb.Helper()
	report, err := b.cat.Publish(context.Background(), reg, w)
	if err != nil {
		tb.Fatal(err)
	}
	return report
}

// ignoreCompiled compares PublishedTypes without their compiled schema.
var ignoreCompiled = cmpopts.IgnoreUnexported(tasks.PublishedType{})

func TestCatalogPublish(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	report := b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w1", Queues: []string{"critical", "default", "low"}})
	want := tasks.PublishReport{Types: []string{"cache:invalidate", "cache:warm", "data:process"}}
	if diff := cmp.Diff(want, report); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}

	// The documents, as producers in other languages read them.
	ctx := context.Background()
	for _, def := range tasks.Default().Definitions() {
		raw, err := b.rdb.HGet(ctx, tasks.CatalogTypesKey, def.Type()).Result()
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"type":         def.Type(),
			"description":  def.Description(),
			"queue":        def.Queue(),
			"schema":       decodeSchema(t, def.Schema()),
			"published_at": "2026-03-04T05:06:07Z",
		}
		if n, ok := def.MaxRetry(); ok {
			want["max_retry"] = float64(n)
		}
		if d, ok := def.Timeout(); ok {
			want["timeout_seconds"] = d.Seconds()
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s document (-want +got):\n%s", def.Type(), diff)
		}
		score, err := b.rdb.ZScore(ctx, tasks.CatalogWorkersPrefix+def.Type(), "w1").Result()
		if err != nil || int64(score) != t0.Unix() {
			t.Errorf("%s: worker w1 score %v (%v), want %d", def.Type(), score, err, t0.Unix())
		}
	}

	got, err := b.cat.Lookup(ctx, tasks.TypeProcessData)
	if err != nil {
		t.Fatal(err)
	}
	five := 5
	wantType := tasks.PublishedType{
		Type:        tasks.TypeProcessData,
		Description: tasks.DataProcess.Definition().Description(),
		Queue:       "default",
		MaxRetry:    &five,
		Timeout:     10 * time.Minute,
		Schema:      tasks.DataProcess.Definition().Schema(),
		PublishedAt: t0,
		Workers:     []tasks.WorkerSeen{{ID: "w1", LastSeen: t0}},
	}
	if diff := cmp.Diff(wantType, got, ignoreCompiled); diff != "" {
		t.Errorf("Lookup (-want +got):\n%s", diff)
	}
}

func TestCatalogPublishEmptyWorkerID(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	if _, err := b.cat.Publish(context.Background(), tasks.Default(), tasks.WorkerInfo{}); err == nil {
		t.Error("Publish with no worker id: nil error")
	}
	if err := b.cat.Heartbeat(context.Background(), tasks.Default(), tasks.WorkerInfo{}); err == nil {
		t.Error("Heartbeat with no worker id: nil error")
	}
}

// TestCatalogTypes lists the types of two workers with different types.
func TestCatalogTypes(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w1"})
	b.clock.advance(10 * time.Second)
	b.publish(t, registry(t, tasks.DataProcess, nestedType), tasks.WorkerInfo{ID: "w2"})

	types, err := b.cat.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := listing(types)
	t10 := t0.Add(10 * time.Second)
	want := []listed{
		{"cache:invalidate", t0, []tasks.WorkerSeen{{"w1", t0}}},
		{"cache:warm", t0, []tasks.WorkerSeen{{"w1", t0}}},
		{"data:process", t10, []tasks.WorkerSeen{{"w2", t10}, {"w1", t0}}}, // most recent first
		{"test:nested", t10, []tasks.WorkerSeen{{"w2", t10}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Types (-want +got):\n%s", diff)
	}
}

// TestCatalogWithdraw: a worker that withdraws is no longer listed; the
// types stay published.
func TestCatalogWithdraw(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	ctx := context.Background()
	b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w1"})
	b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w2"})
	for _, step := range []struct {
		withdraw    string
		wantWorkers []tasks.WorkerSeen
	}{
		{"w1", []tasks.WorkerSeen{{"w2", t0}}},
		{"w2", nil},
		{"w2", nil}, // again: nothing to do
	} {
		if err := b.cat.Withdraw(ctx, tasks.Default(), tasks.WorkerInfo{ID: step.withdraw}); err != nil {
			t.Fatal(err)
		}
		for _, typ := range tasks.Default().Types() {
			p, err := b.cat.Lookup(ctx, typ)
			if err != nil {
				t.Fatalf("after withdrawing %s: %v", step.withdraw, err)
			}
			if diff := cmp.Diff(step.wantWorkers, p.Workers); diff != "" {
				t.Errorf("after withdrawing %s: %s workers (-want +got):\n%s", step.withdraw, typ, diff)
			}
		}
	}
}

// TestCatalogExpiry: a worker not seen for a day drops out of the
// listings, and the next Publish deletes its entries.
func TestCatalogExpiry(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	ctx := context.Background()
	b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "gone"})
	b.clock.advance(tasks.CatalogWorkerExpiry - time.Second)
	p, err := b.cat.Lookup(ctx, tasks.TypeWarm)
	if err != nil || len(p.Workers) != 1 {
		t.Fatalf("a second before expiry: workers %v (%v), want gone", p.Workers, err)
	}

	b.clock.advance(2 * time.Second)
	p, err = b.cat.Lookup(ctx, tasks.TypeWarm)
	if err != nil || len(p.Workers) != 0 {
		t.Errorf("after expiry: workers %v (%v), want none", p.Workers, err)
	}
	key := tasks.CatalogWorkersPrefix + tasks.TypeWarm
	if n := b.rdb.ZCard(ctx, key).Val(); n != 1 {
		t.Errorf("before the next publish: %d entries, want the expired one still there", n)
	}
	b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "new"})
	members, err := b.rdb.ZRange(ctx, key, 0, -1).Result()
	if diff := cmp.Diff([]string{"new"}, members); diff != "" || err != nil {
		t.Errorf("after the next publish (%v): members (-want +got):\n%s", err, diff)
	}
}

// Two versions of one type, as two releases of a program define it.
type (
	versionOne struct {
		N int `json:"n"`
	}
	versionTwo struct {
		N    int    `json:"n"`
		Mode string `json:"mode"`
	}
)

var (
	typeV1 = tasks.Define("test:versioned", "Version one.",
		func(context.Context, tasks.Deps, versionOne) ([]byte, error) { return nil, nil })
	typeV2 = tasks.Define("test:versioned", "Version two.",
		func(context.Context, tasks.Deps, versionTwo) ([]byte, error) { return nil, nil })
)

// TestCatalogChanged: the last worker to publish a type wins, and its
// report names the types whose definition it replaced.
func TestCatalogChanged(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	steps := []struct {
		name            string
		giveType        tasks.Declared
		wantChanged     []string
		wantDescription string
	}{
		{"first", typeV1, nil, "Version one."},
		{"same again, later", typeV1, nil, "Version one."},
		{"another version", typeV2, []string{"test:versioned"}, "Version two."},
		{"back", typeV1, []string{"test:versioned"}, "Version one."},
	}
	for _, step := range steps {
		b.clock.advance(time.Minute)
		report := b.publish(t, registry(t, step.giveType), tasks.WorkerInfo{ID: "w-" + step.name})
		if diff := cmp.Diff(step.wantChanged, report.Changed); diff != "" {
			t.Errorf("%s: changed (-want +got):\n%s", step.name, diff)
		}
		p, err := b.cat.Lookup(context.Background(), "test:versioned")
		if err != nil {
			t.Fatal(err)
		}
		if p.Description != step.wantDescription {
			t.Errorf("%s: description %q, want the last publisher's %q", step.name, p.Description, step.wantDescription)
		}
	}
}

func TestCatalogUnserved(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	report := b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w1", Queues: []string{"default"}})
	if diff := cmp.Diff([]string{tasks.TypeWarm}, report.Unserved); diff != "" {
		t.Errorf("unserved (-want +got):\n%s", diff)
	}
}

// TestCatalogHeartbeat: a heartbeat moves the worker's last-seen time and
// publishes again a type that was deleted, leaving the others alone.
func TestCatalogHeartbeat(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	ctx := context.Background()
	w := tasks.WorkerInfo{ID: "w1"}
	b.publish(t, tasks.Default(), w)
	if err := b.rdb.HDel(ctx, tasks.CatalogTypesKey, tasks.TypeWarm).Err(); err != nil {
		t.Fatal(err)
	}
	b.clock.advance(30 * time.Second)
	if err := b.cat.Heartbeat(ctx, tasks.Default(), w); err != nil {
		t.Fatal(err)
	}
	types, err := b.cat.Types(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := listing(types)
	t30 := t0.Add(30 * time.Second)
	want := []listed{
		{"cache:invalidate", t0, []tasks.WorkerSeen{{"w1", t30}}},
		{"cache:warm", t30, []tasks.WorkerSeen{{"w1", t30}}}, // published again
		{"data:process", t0, []tasks.WorkerSeen{{"w1", t30}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after the heartbeat (-want +got):\n%s", diff)
	}
}

// TestCatalogLookupUnknown checks the error for a type no worker ever
// published.
func TestCatalogLookupUnknown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		givePublished bool
		giveType      string
		want          tasks.UnpublishedError
		wantMsg       string
	}{
		{
			name:     "empty catalogue",
			giveType: "data:process",
			want:     tasks.UnpublishedError{Type: "data:process"},
			wantMsg: `tasks: unknown task type "data:process": no worker has ever published it to the task catalogue ` +
				`(the catalogue is empty: has a worker run against this Redis?)`,
		},
		{
			name:          "a typo",
			givePublished: true,
			giveType:      "data:proces",
			want: tasks.UnpublishedError{Type: "data:proces", Published: []string{"cache:invalidate", "cache:warm", "data:process"},
				Suggestion: "data:process"},
			wantMsg: `tasks: unknown task type "data:proces": no worker has ever published it to the task catalogue ` +
				`(published: cache:invalidate, cache:warm, data:process); did you mean "data:process"?`,
		},
		{
			name:          "another type",
			givePublished: true,
			giveType:      "email:send",
			want:          tasks.UnpublishedError{Type: "email:send", Published: []string{"cache:invalidate", "cache:warm", "data:process"}},
			wantMsg: `tasks: unknown task type "email:send": no worker has ever published it to the task catalogue ` +
				`(published: cache:invalidate, cache:warm, data:process)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupCatalog(t)
			if tt.givePublished {
				b.publish(t, tasks.Default(), tasks.WorkerInfo{ID: "w1"})
			}
			_, err := b.cat.Lookup(context.Background(), tt.giveType)
			if !errors.Is(err, tasks.ErrUnknownType) {
				t.Fatalf("error %v does not wrap ErrUnknownType", err)
			}
			var got *tasks.UnpublishedError
			if !errors.As(err, &got) {
				t.Fatalf("error %v is not an *UnpublishedError", err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantMsg, err.Error()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCatalogInvalidEntries: entries that cannot be read are left out of
// Types, and Lookup says what is wrong with them.
func TestCatalogInvalidEntries(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	ctx := context.Background()
	b.publish(t, registry(t, tasks.DataProcess), tasks.WorkerInfo{ID: "w1"})
	bad := map[string]string{
		"bad:json":   `{"type":`,
		"bad:name":   `{"type":"other","schema":{}}`,
		"bad:none":   `{"type":"bad:none"}`,
		"bad:schema": `{"type":"bad:schema","schema":{"type":5}}`,
		"bad:ref":    `{"type":"bad:ref","schema":{"$ref":"file:///etc/hostname"}}`,
	}
	for typ, doc := range bad {
		if err := b.rdb.HSet(ctx, tasks.CatalogTypesKey, typ, doc).Err(); err != nil {
			t.Fatal(err)
		}
	}
	types, err := b.cat.Types(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(types) != 1 || types[0].Type != tasks.TypeProcessData {
		t.Errorf("Types = %+v, want data:process alone", types)
	}
	for typ := range bad {
		if _, err := b.cat.Lookup(ctx, typ); !errors.Is(err, tasks.ErrInvalidCatalogEntry) {
			t.Errorf("Lookup(%s): %v, want ErrInvalidCatalogEntry", typ, err)
		}
	}
}

func TestSuggestType(t *testing.T) {
	t.Parallel()
	names := []string{"cache:invalidate", "cache:warm", "data:process", "report:build"}
	tests := []struct {
		give string
		want string
	}{
		{"data:proces", "data:process"},
		{"Data:Process", "data:process"},
		{"cache:wram", "cache:warm"},
		{"cache:invalidat", "cache:invalidate"},
		{"report:built", "report:build"},
		{"email:send", ""},
		{"x", ""},
	}
	for _, tt := range tests {
		if got := tasks.SuggestType(tt.give, names); got != tt.want {
			t.Errorf("SuggestType(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// TestCatalogIntegration runs the catalogue on the real Redis (database
// catalogDB), on Redis Cluster, and as the ACL user (which may only touch
// ~forgeq:* of the catalogue's keys). The cluster is shared, so the test's
// types have names of their own and it deletes its keys.
func TestCatalogIntegration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("redis", func(t *testing.T) {
		rdb := redisClient(t, redistest.URL(t, catalogDB))
		if err := rdb.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		testCatalogRoundTrip(t, rdb)
	})
	t.Run("acl", func(t *testing.T) {
		u, err := url.Parse(redistest.ACLURL(t))
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + strconv.Itoa(catalogDB)
		testCatalogRoundTrip(t, redisClient(t, u.String()))
	})
	t.Run("cluster", func(t *testing.T) {
		m, err := cachemgr.New(cachemgr.Options{URL: redistest.ClusterURL(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		testCatalogRoundTrip(t, m.Client())
	})
}

// redisClient returns a client on url, closed at cleanup.
func redisClient(tb testing.TB, url string) redis.UniversalClient {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// roundTripPayload is the payload of testCatalogRoundTrip's types.
type roundTripPayload struct {
	Count int    `json:"count" jsonschema:"minimum=1" help:"how many"`
	Note  string `json:"note,omitempty" help:"a note"`
}

// testCatalogRoundTrip publishes two types of unique names on rdb,
// looks them up, lists them, refreshes, enqueues-ready tasks, withdraws,
// and deletes its keys.
func testCatalogRoundTrip(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	prefix := "test:" + hex.EncodeToString(rnd[:]) + ":"
	handle := func(context.Context, tasks.Deps, roundTripPayload) ([]byte, error) { return nil, nil }
	a := tasks.Define(prefix+"a", "Type a.", handle, asynq.Queue("low"), asynq.MaxRetry(2), asynq.Timeout(time.Minute))
	b := tasks.Define(prefix+"b", "Type b.", handle)
	reg := registry(t, a, b)
	t.Cleanup(func() {
		rdb.HDel(ctx, tasks.CatalogTypesKey, a.Name(), b.Name())
		rdb.Del(ctx, tasks.CatalogWorkersPrefix+a.Name())
		rdb.Del(ctx, tasks.CatalogWorkersPrefix+b.Name())
	})

	cat := tasks.NewCatalog(rdb)
	w1, w2 := tasks.WorkerInfo{ID: prefix + "w1"}, tasks.WorkerInfo{ID: prefix + "w2"}
	report, err := cat.Publish(ctx, reg, w1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{a.Name(), b.Name()}, report.Types); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
	if _, err := cat.Publish(ctx, reg, w2); err != nil {
		t.Fatal(err)
	}
	if err := cat.Heartbeat(ctx, reg, w1); err != nil {
		t.Fatal(err)
	}

	p, err := cat.Lookup(ctx, a.Name())
	if err != nil {
		t.Fatal(err)
	}
	if p.Queue != "low" || p.MaxRetry == nil || *p.MaxRetry != 2 || p.Timeout != time.Minute || len(p.Workers) != 2 {
		t.Errorf("Lookup(a) = %+v, want queue low, 2 retries, 1m and two workers", p)
	}
	if _, err := p.NewTask([]byte(`{"count":0}`)); !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("count 0: %v, want ErrInvalidPayload", err)
	}
	task, err := p.NewTask([]byte(`{"count":3}`))
	if err != nil || string(task.Payload()) != `{"count":3}` {
		t.Errorf("NewTask: %v, %v", task, err)
	}

	all, err := cat.Types(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, p := range all {
		if p.Type == a.Name() || p.Type == b.Name() {
			found++
		}
	}
	if found != 2 {
		t.Errorf("Types lists %d of the 2 types published", found)
	}

	if _, err := cat.Lookup(ctx, prefix+"c"); !errors.Is(err, tasks.ErrUnknownType) {
		t.Errorf("Lookup(c): %v, want ErrUnknownType", err)
	}
	for _, w := range []tasks.WorkerInfo{w1, w2} {
		if err := cat.Withdraw(ctx, reg, w); err != nil {
			t.Fatal(err)
		}
	}
	p, err = cat.Lookup(ctx, b.Name())
	if err != nil || len(p.Workers) != 0 {
		t.Errorf("after withdrawing: %+v, %v; want b published without workers", p.Workers, err)
	}
}

// listed is what a listing shows of a published type.
type listed struct {
	Type        string
	PublishedAt time.Time
	Workers     []tasks.WorkerSeen
}

// listing returns what a listing shows of types.
func listing(types []tasks.PublishedType) []listed {
	var out []listed
	for _, p := range types {
		out = append(out, listed{p.Type, p.PublishedAt, p.Workers})
	}
	return out
}

// A type's retention and TakesPrevious reach the catalogue, and the
// published type applies the retention as a default.
func TestCatalogRetentionAndTakesPrevious(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t)
	typ := tasks.Define("test:kept", "Kept an hour.",
		func(context.Context, tasks.Deps, struct{}) ([]byte, error) { return nil, nil },
		asynq.Retention(time.Hour)).TakesPrevious("the rows before")
	reg, err := tasks.NewRegistry(typ)
	if err != nil {
		t.Fatal(err)
	}
	b.publish(t, reg, tasks.WorkerInfo{ID: "w1"})
	got, err := b.cat.Lookup(context.Background(), "test:kept")
	if err != nil {
		t.Fatal(err)
	}
	if got.Retention != time.Hour || got.TakesPrevious != "the rows before" {
		t.Fatalf("published %+v", got)
	}
	if _, err := got.NewTask([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range got.Defaults() {
		if o.Type() == asynq.RetentionOpt && o.Value() == time.Hour {
			found = true
		}
	}
	if !found {
		t.Fatalf("defaults %v lack the retention", got.Defaults())
	}
	if typ.Definition().TakesPrevious() != "the rows before" || typ.Name() != "test:kept" {
		t.Fatal("TakesPrevious lost the type's definition")
	}
}
