package cachemgr_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

// miniManager returns a manager on a fresh miniredis.
func miniManager(tb testing.TB, o cachemgr.Options) (*cachemgr.Manager, *miniredis.Miniredis) {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m, mr
}

// realManager returns a manager on the real Redis (db 2) with a key prefix
// of its own, or skips the test when there is none. The cleanup deletes the
// cache keys under the prefix; the DB is shared, so it is never flushed.
func realManager(tb testing.TB, url string) *cachemgr.Manager {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url, KeyPrefix: redistest.Prefix(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if _, err := m.DeletePattern(context.Background(), "*"); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		m.Close()
	})
	return m
}

type jsonProfile struct {
	Name  string   `json:"name"`
	Age   int      `json:"age"`
	Tags  []string `json:"tags,omitempty"`
	Admin bool     `json:"admin"`
}

func TestSetJSONStoresJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		give    any
		wantRaw string
	}{
		{"struct", jsonProfile{Name: "ada", Age: 36, Tags: []string{"math"}}, `{"name":"ada","age":36,"tags":["math"],"admin":false}`},
		{"pointer", &jsonProfile{Name: "bob"}, `{"name":"bob","age":0,"admin":false}`},
		{"map", map[string]int{"b": 2, "a": 1}, `{"a":1,"b":2}`},
		{"slice", []int{1, 2, 3}, `[1,2,3]`},
		{"string", "hi", `"hi"`},
		{"nil", nil, `null`},
		{"bytes", []byte("x"), `"eA=="`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, mr := miniManager(t, cachemgr.Options{})
			if err := cachemgr.SetJSON(context.Background(), m, "k", tt.give, time.Minute); err != nil {
				t.Fatal(err)
			}
			got, err := mr.Get("cache:k")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRaw, got); diff != "" {
				t.Errorf("raw value (-want +got):\n%s", diff)
			}
			if got := mr.TTL("cache:k"); got != time.Minute {
				t.Errorf("TTL = %v, want 1m", got)
			}
		})
	}
}

func TestGetJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		giveRaw string // stored under cache:k; "" stores nothing
		want    jsonProfile
		wantErr error
	}{
		{name: "value", giveRaw: `{"name":"ada","age":36,"tags":["math"]}`, want: jsonProfile{Name: "ada", Age: 36, Tags: []string{"math"}}},
		{name: "unknown fields ignored", giveRaw: `{"name":"ada","shoe":44}`, want: jsonProfile{Name: "ada"}},
		{name: "miss", wantErr: cachemgr.ErrMiss},
		{name: "not JSON", giveRaw: `ada`, wantErr: cachemgr.ErrDecode},
		{name: "wrong field type", giveRaw: `{"name":5}`, wantErr: cachemgr.ErrDecode},
		{name: "wrong shape", giveRaw: `[1,2]`, wantErr: cachemgr.ErrDecode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, mr := miniManager(t, cachemgr.Options{})
			if tt.giveRaw != "" {
				mr.Set("cache:k", tt.giveRaw)
			}
			got, err := cachemgr.GetJSON[jsonProfile](context.Background(), m, "k")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("GetJSON error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("GetJSON (-want +got):\n%s", diff)
			}
			if errors.Is(err, cachemgr.ErrDecode) {
				for _, want := range []string{`"k"`, "cachemgr_test.jsonProfile"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
			}
		})
	}
}

func TestGetJSONTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _ := miniManager(t, cachemgr.Options{})

	if err := cachemgr.SetJSON(ctx, m, "map", map[string][]int{"a": {1}}, 0); err != nil {
		t.Fatal(err)
	}
	gotMap, err := cachemgr.GetJSON[map[string][]int](ctx, m, "map")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]int{"a": {1}}, gotMap); diff != "" {
		t.Errorf("map (-want +got):\n%s", diff)
	}

	if err := cachemgr.SetJSON(ctx, m, "ptr", jsonProfile{Name: "ada"}, 0); err != nil {
		t.Fatal(err)
	}
	gotPtr, err := cachemgr.GetJSON[*jsonProfile](ctx, m, "ptr")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&jsonProfile{Name: "ada"}, gotPtr); diff != "" {
		t.Errorf("pointer (-want +got):\n%s", diff)
	}

	// An interface type is named in the error, not printed as <nil>.
	_, err = cachemgr.GetJSON[error](ctx, m, "ptr")
	if !errors.Is(err, cachemgr.ErrDecode) || !strings.Contains(err.Error(), "error") || strings.Contains(err.Error(), "<nil>") {
		t.Errorf("GetJSON[error] = %v, want ErrDecode naming the type", err)
	}
}

func TestSetJSONRejectsUnmarshalable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		give any
	}{
		{"channel", make(chan int)},
		{"func", func() {}},
		{"NaN", math.NaN()},
		{"failing marshaler", failingMarshaler{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{})
			if err := cachemgr.SetJSON(ctx, m, "k", tt.give, 0); !errors.Is(err, cachemgr.ErrInvalidArgument) {
				t.Errorf("SetJSON = %v, want ErrInvalidArgument", err)
			}
			if _, err := cachemgr.SetJSONAsync(ctx, m, "k", tt.give, 0).Wait(); !errors.Is(err, cachemgr.ErrInvalidArgument) {
				t.Errorf("SetJSONAsync = %v, want ErrInvalidArgument", err)
			}
			if keys := mr.Keys(); len(keys) != 0 {
				t.Errorf("keys = %v, want none", keys)
			}
		})
	}
}

type failingMarshaler struct{}

func (failingMarshaler) MarshalJSON() ([]byte, error) { return nil, errors.New("boom") }

func TestJSONAsync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})

	give := &jsonProfile{Name: "ada", Tags: []string{"math"}}
	f := cachemgr.SetJSONAsync(ctx, m, "k", give, time.Minute)
	give.Name = "changed after the call" // must not reach the cache
	if _, err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := mr.TTL("cache:k"); got != time.Minute {
		t.Errorf("TTL = %v, want 1m", got)
	}

	got, err := cachemgr.GetJSONAsync[jsonProfile](ctx, m, "k").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(jsonProfile{Name: "ada", Tags: []string{"math"}}, got); diff != "" {
		t.Errorf("GetJSONAsync (-want +got):\n%s", diff)
	}

	if _, err := cachemgr.GetJSONAsync[jsonProfile](ctx, m, "missing").Wait(); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetJSONAsync missing = %v, want ErrMiss", err)
	}
	mr.Set("cache:bad", "{")
	if _, err := cachemgr.GetJSONAsync[jsonProfile](ctx, m, "bad").Wait(); !errors.Is(err, cachemgr.ErrDecode) {
		t.Errorf("GetJSONAsync bad = %v, want ErrDecode", err)
	}
	if _, err := cachemgr.GetJSONAsync[jsonProfile](ctx, m, "").Wait(); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("GetJSONAsync empty key = %v, want ErrInvalidArgument", err)
	}

	// Reads are counted like GetAsync's: two hits (the bad value was
	// found), one miss, one error (the empty key).
	want := cachemgr.OpStats{Calls: 4, Hits: 2, Misses: 1, Errors: 1}
	if diff := cmp.Diff(want, m.Stats().Ops[cachemgr.OpGet], ignoreLatency); diff != "" {
		t.Errorf("get stats (-want +got):\n%s", diff)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := cachemgr.GetJSONAsync[jsonProfile](cancelled, m, "k").Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("GetJSONAsync cancelled = %v, want context.Canceled", err)
	}
}

func TestJSONAsyncConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _ := miniManager(t, cachemgr.Options{})

	// Async calls travel in several pipelines, so only calls on different
	// keys are independent of each other's order.
	const n = 200
	sets := make([]*cachemgr.Future[struct{}], n)
	for i := range n {
		sets[i] = cachemgr.SetJSONAsync(ctx, m, fmt.Sprint("k", i), jsonProfile{Age: i}, 0)
	}
	for _, f := range sets {
		if _, err := f.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	gets := make([]*cachemgr.Future[jsonProfile], n)
	for i := range n {
		gets[i] = cachemgr.GetJSONAsync[jsonProfile](ctx, m, fmt.Sprint("k", i))
	}
	for i, f := range gets {
		got, err := f.Wait()
		if err != nil || got.Age != i {
			t.Fatalf("GetJSONAsync(k%d) = %+v, %v, want age %d", i, got, err, i)
		}
	}
}

func TestGetOrComputeJSON(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})

	var calls atomic.Int32
	compute := func(context.Context) (jsonProfile, error) {
		calls.Add(1)
		return jsonProfile{Name: "ada", Age: 36}, nil
	}
	want := jsonProfile{Name: "ada", Age: 36}
	for i, wantHit := range []bool{false, true, true} {
		got, hit, err := cachemgr.GetOrComputeJSON(ctx, m, "k", time.Minute, compute)
		if err != nil {
			t.Fatal(err)
		}
		if hit != wantHit {
			t.Errorf("call %d: hit = %v, want %v", i, hit, wantHit)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("call %d (-want +got):\n%s", i, diff)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("compute ran %d times, want 1", calls.Load())
	}
	raw, _ := mr.Get("cache:k")
	if diff := cmp.Diff(`{"name":"ada","age":36,"admin":false}`, raw); diff != "" {
		t.Errorf("raw (-want +got):\n%s", diff)
	}
	if got := mr.TTL("cache:k"); got != time.Minute {
		t.Errorf("TTL = %v, want 1m", got)
	}
}

func TestGetOrComputeJSONErrors(t *testing.T) {
	t.Parallel()
	errCompute := errors.New("compute failed")
	tests := []struct {
		name    string
		giveRaw string // stored under cache:k before the call
		compute func(context.Context) (float64, error)
		wantErr error
	}{
		{
			name:    "compute error",
			compute: func(context.Context) (float64, error) { return 0, errCompute },
			wantErr: errCompute,
		},
		{
			name:    "unmarshalable result",
			compute: func(context.Context) (float64, error) { return math.Inf(1), nil },
			wantErr: cachemgr.ErrInvalidArgument,
		},
		{
			name:    "cached value of another type",
			giveRaw: `"text"`,
			compute: func(context.Context) (float64, error) { return 1, nil },
			wantErr: cachemgr.ErrDecode,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, mr := miniManager(t, cachemgr.Options{})
			if tt.giveRaw != "" {
				mr.Set("cache:k", tt.giveRaw)
			}
			got, _, err := cachemgr.GetOrComputeJSON(context.Background(), m, "k", 0, tt.compute)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if got != 0 {
				t.Errorf("value = %v, want 0", got)
			}
			if raw, _ := mr.Get("cache:k"); raw != tt.giveRaw {
				t.Errorf("raw = %q, want %q (nothing stored)", raw, tt.giveRaw)
			}
		})
	}
}

func TestJSONAfterClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _ := miniManager(t, cachemgr.Options{})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	errs := map[string]error{
		"SetJSON": cachemgr.SetJSON(ctx, m, "k", make(chan int), 0),
	}
	_, errs["GetJSON"] = cachemgr.GetJSON[int](ctx, m, "k")
	_, errs["SetJSONAsync"] = cachemgr.SetJSONAsync(ctx, m, "k", 1, 0).Wait()
	_, errs["GetJSONAsync"] = cachemgr.GetJSONAsync[int](ctx, m, "k").Wait()
	for name, err := range errs {
		if !errors.Is(err, cachemgr.ErrClosed) {
			t.Errorf("%s = %v, want ErrClosed", name, err)
		}
	}
}

func TestJSONRealRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := realManager(t, redistest.URL(t, 2))

	want := jsonProfile{Name: "ada", Age: 36, Tags: []string{"math", "engines"}}
	if err := cachemgr.SetJSON(ctx, m, "p", want, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := cachemgr.GetJSON[jsonProfile](ctx, m, "p")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetJSON (-want +got):\n%s", diff)
	}
	got, err = cachemgr.GetJSONAsync[jsonProfile](ctx, m, "p").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetJSONAsync (-want +got):\n%s", diff)
	}
	if ttl := m.Client().PTTL(ctx, m.Key("p")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL = %v, want (0, 1m]", ttl)
	}
}
