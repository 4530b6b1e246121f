package cachemgr_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
)

func TestAsyncRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	if _, err := b.m.SetAsync(ctx, "k", "v", time.Minute).Wait(); err != nil {
		t.Fatal(err)
	}
	f := b.m.GetAsync(ctx, "k")
	<-f.Done()
	if v, err := f.Wait(); err != nil || v != "v" {
		t.Errorf("GetAsync = %q, %v", v, err)
	}
	if b.mr.TTL("cache:k") != time.Minute {
		t.Errorf("TTL = %v", b.mr.TTL("cache:k"))
	}
	if _, err := b.m.GetAsync(ctx, "nope").Wait(); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("miss = %v", err)
	}
	if _, err := b.m.SetAsync(ctx, "k", []int{1}, 0).Wait(); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("bad value = %v", err)
	}
}

// A write-behind set from an HTTP handler must land even though the
// request's ctx is cancelled as soon as the handler returns.
func TestSetAsyncSurvivesCancelledContext(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	futures := make([]*cachemgr.Future[struct{}], 100)
	for i := range futures {
		futures[i] = b.m.SetAsync(ctx, fmt.Sprint("k", i), "v", 0)
	}
	cancel()
	for i, f := range futures {
		if _, err := f.Wait(); err != nil {
			t.Errorf("set %d: %v", i, err)
		}
	}
	if n := len(b.mr.Keys()); n != 100 {
		t.Errorf("%d keys written, want 100", n)
	}
}

func TestGetAsyncGivesUpOnCancelledContext(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.m.GetAsync(ctx, "k").Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("= %v, want context.Canceled", err)
	}
}

// Close right after a burst of SetAsync calls loses none of them.
func TestCloseDrainsAcceptedWrites(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr(), AsyncMaxInFlight: 64})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Go(func() {
			for i := range n / 10 {
				m.SetAsync(context.Background(), fmt.Sprintf("burst:%d:%d", g, i), i, 0) // fire and forget
			}
		})
	}
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(mr.Keys()); got != n {
		t.Errorf("%d of %d accepted writes landed", got, n)
	}
	if s := m.Stats(); s.Ops[cachemgr.OpSet].Calls != n || s.Ops[cachemgr.OpSet].Errors != 0 || s.AsyncInFlight != 0 {
		t.Errorf("stats = %+v in flight %d", s.Ops[cachemgr.OpSet], s.AsyncInFlight)
	}
}

// gate is a go-redis hook that holds every pipeline until opened.
type gate struct {
	open    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.once.Do(func() { close(g.entered) })
		<-g.open
		return next(ctx, cmds)
	}
}

func gated(t *testing.T, o cachemgr.Options) (*cachemgr.Manager, *gate, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	g := &gate{open: make(chan struct{}), entered: make(chan struct{})}
	rdb.AddHook(g)
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, g, mr
}

// Calls made while a batch is on the wire leave together in the next one.
func TestAsyncCallsShareAPipeline(t *testing.T) {
	t.Parallel()
	m, g, _ := gated(t, cachemgr.Options{AsyncPipelines: 1})
	ctx := context.Background()
	first := m.SetAsync(ctx, "first", "v", 0)
	<-g.entered // the first batch is on the wire and held there
	futures := make([]*cachemgr.Future[struct{}], 300)
	for i := range futures {
		futures[i] = m.SetAsync(ctx, fmt.Sprint("k", i), i, 0)
	}
	close(g.open)
	if _, err := first.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, f := range futures {
		if _, err := f.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	s := m.Stats()
	if s.BatchedCalls != 301 || s.Batches != 2 {
		t.Errorf("%d calls in %d pipelines, want 301 in 2", s.BatchedCalls, s.Batches)
	}
}

// With AsyncMaxInFlight accepted calls pending, the next call blocks until
// one finishes or its ctx ends.
func TestAsyncBackpressure(t *testing.T) {
	t.Parallel()
	m, g, _ := gated(t, cachemgr.Options{AsyncPipelines: 1, AsyncMaxInFlight: 4})
	bg := context.Background()
	var pending []*cachemgr.Future[struct{}]
	for i := range 4 {
		pending = append(pending, m.SetAsync(bg, fmt.Sprint("k", i), "v", 0))
	}
	<-g.entered
	if got := m.Stats().AsyncInFlight; got != 4 {
		t.Errorf("in flight = %d, want 4", got)
	}
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	if _, err := m.SetAsync(ctx, "over", "v", 0).Wait(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("fifth call = %v, want it to block until its deadline", err)
	}
	accepted := make(chan *cachemgr.Future[string], 1)
	go func() { accepted <- m.GetAsync(bg, "k0") }()
	select {
	case <-accepted:
		t.Error("call over the limit was accepted")
	case <-time.After(20 * time.Millisecond):
	}
	close(g.open)
	blocked := <-accepted
	for _, f := range pending {
		if _, err := f.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := blocked.Wait(); err != nil || v != "v" {
		t.Errorf("blocked call = %q, %v", v, err)
	}
}

// A failing server fails each call of the batch with its own error; the
// manager goes on working when the server is back.
func TestAsyncServerErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	b.mr.SetError("LOADING please wait")
	_, err := b.m.SetAsync(context.Background(), "k", "v", 0).Wait()
	if err == nil || errors.Is(err, cachemgr.ErrMiss) {
		t.Fatalf("= %v, want the server's error", err)
	}
	b.mr.SetError("")
	if _, err := b.m.SetAsync(context.Background(), "k", "v", 0).Wait(); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestAsyncUnreachableFailsFast(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + addr, SocketTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	if _, err := m.GetAsync(context.Background(), "k").Wait(); err == nil {
		t.Fatal("no error")
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

// Every async call that was accepted runs to its end, whatever it is, even
// when Close begins before its goroutine does: the closed check belongs to
// accepting a call, not to running it.
func TestCloseRunsAcceptedGoroutineCalls(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 100
	var (
		wipes    []*cachemgr.Future[int64]
		computes []*cachemgr.Future[cachemgr.Computed]
		pings    []*cachemgr.Future[struct{}]
	)
	for i := range n {
		mr.Set(fmt.Sprintf("cache:old:%d", i), "x")
	}
	for i := range n {
		wipes = append(wipes, m.DeletePatternAsync(ctx, fmt.Sprintf("old:%d", i)))
		computes = append(computes, m.GetOrComputeAsync(ctx, fmt.Sprintf("new:%d", i), 0,
			func(context.Context) (string, error) { return "v", nil }))
		pings = append(pings, m.PingAsync(ctx))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got, err := wipes[i].Wait(); got != 1 || err != nil {
			t.Errorf("DeletePatternAsync %d = %d, %v; want 1, nil", i, got, err)
		}
		if c, err := computes[i].Wait(); c.Value != "v" || err != nil {
			t.Errorf("GetOrComputeAsync %d = %+v, %v", i, c, err)
		}
		if _, err := pings[i].Wait(); err != nil {
			t.Errorf("PingAsync %d = %v", i, err)
		}
	}
	if keys := mr.Keys(); len(keys) != n {
		t.Errorf("%d keys after Close, want the %d computed values: %v", len(keys), n, keys)
	}
	if t.Failed() {
		return
	}
	// After Close nothing is accepted.
	if _, err := m.DeletePatternAsync(ctx, "*").Wait(); !errors.Is(err, cachemgr.ErrClosed) {
		t.Errorf("DeletePatternAsync after Close = %v, want ErrClosed", err)
	}
}
