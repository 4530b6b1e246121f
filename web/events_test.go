package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// sseEvent is one event, or comment, read from a text/event-stream.
type sseEvent struct {
	ID, Name, Data string
	HasID          bool
	Comment        string
}

// sseStream is an open GET of a task's event stream.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent // closed at the end of the stream
	cancel context.CancelFunc
}

// openEvents GETs path on base with the header h and, when the answer is
// 200, reads its events on a goroutine. The stream is closed when the test
// ends.
func openEvents(tb testing.TB, base, path string, h map[string]string) *sseStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range h {
		r.Header.Set(k, v)
	}
	if h["user"] != "" {
		r.Header.Del("user")
		r.SetBasicAuth(testUser, testPass)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		cancel()
		tb.Fatalf("GET %s: %v", path, err)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 64), cancel: cancel}
	tb.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		close(s.events)
		return s
	}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e != (sseEvent{}) {
					s.events <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
				e.Comment = strings.TrimSpace(line[1:])
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "id":
					e.ID, e.HasID = value, true
				case "event":
					e.Name = value
				case "data":
					e.Data += value
				}
			}
		}
	}()
	return s
}

// next returns the next event that is not a comment or a retry field, or
// fails after d; ok is false at the end of the stream.
func (s *sseStream) next(tb testing.TB, d time.Duration) (sseEvent, bool) {
	tb.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return sseEvent{}, false
			}
			if e.Name == "" && e.Data == "" {
				continue // a comment or the retry field
			}
			return e, true
		case <-t.C:
			tb.Fatalf("no event within %v", d)
			return sseEvent{}, false
		}
	}
}

// wantEnd checks that the stream ends within d without another event.
func (s *sseStream) wantEnd(tb testing.TB, d time.Duration) {
	tb.Helper()
	if e, ok := s.next(tb, d); ok {
		tb.Fatalf("event %+v, want the end of the stream", e)
	}
}

// wantHeartbeat checks that the stream, past what it has sent so far,
// sends a heartbeat comment within d.
func (s *sseStream) wantHeartbeat(tb testing.TB, d time.Duration) {
	tb.Helper()
	for drained := false; !drained; {
		select {
		case _, ok := <-s.events:
			if !ok {
				tb.Fatal("the stream ended, want a heartbeat")
			}
		default:
			drained = true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				tb.Fatal("the stream ended, want a heartbeat")
			}
			if e.Comment == "heartbeat" {
				return
			}
		case <-t.C:
			tb.Fatalf("no heartbeat within %v", d)
		}
	}
}

// decodeEvent decodes the data of e, an event of package events.
func decodeEvent(tb testing.TB, e sseEvent) events.Event {
	tb.Helper()
	var got events.Event
	if err := json.Unmarshal([]byte(e.Data), &got); err != nil {
		tb.Fatalf("event %s: data %q: %v", e.Name, e.Data, err)
	}
	return got
}

// taskState is the data of a "state" event: GET /api/tasks/{queue}/{id}'s
// body.
type taskState struct {
	ID        string          `json:"id"`
	State     string          `json:"state"`
	LastError string          `json:"last_error"`
	Result    json.RawMessage `json:"result"`
	Progress  *tasks.Progress `json:"progress"`
	EventsURL string          `json:"events_url"`
	PageURL   string          `json:"page_url"`
}

// xadd publishes e in queue's stream, in an entry of its own, and returns
// its ID.
func xadd(tb testing.TB, rdb redis.UniversalClient, queue string, e events.Event) string {
	tb.Helper()
	p := events.NewPublisher(rdb, events.PublisherOptions{})
	defer p.Close()
	e.Queue = queue
	p.Publish(e)
	if err := p.Flush(context.Background()); err != nil {
		tb.Fatal(err)
	}
	entry, err := events.NewClient(rdb, events.ClientOptions{}).LastID(context.Background(), queue)
	if err != nil {
		tb.Fatal(err)
	}
	return entry + ":0"
}

// entryOf returns the entry id of event ID id: a stream position.
func entryOf(id string) string {
	entry, _, _ := strings.Cut(id, ":")
	return entry
}

// pendingTask enqueues a data:process task with id on queue (no worker
// runs it) and returns its events path.
func pendingTask(tb testing.TB, rdb redis.UniversalClient, queue, id string) string {
	tb.Helper()
	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: id, Work: 1}, asynq.Queue(queue), asynq.TaskID(id))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(context.Background(), task); err != nil {
		tb.Fatal(err)
	}
	return "/api/tasks/" + queue + "/" + id + "/events"
}

func TestTaskEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := pendingTask(t, b.rdb, "default", "t1")
	before := xadd(t, b.rdb, "default", events.Event{Kind: events.Progress, TaskID: "other", Percent: 10})

	s := openEvents(t, b.ts.URL, path, nil)
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	// First the state, with the stream's position as its id.
	e, _ := s.next(t, 5*time.Second)
	var st taskState
	if err := json.Unmarshal([]byte(e.Data), &st); err != nil {
		t.Fatal(err)
	}
	if e.Name != "state" || e.ID != entryOf(before) || st.ID != "t1" || st.State != "pending" {
		t.Fatalf("first event %+v (%+v), want the pending state with id %s", e, st, entryOf(before))
	}
	if st.EventsURL != path || st.PageURL != "/tasks/default/t1" {
		t.Errorf("state links %q %q", st.EventsURL, st.PageURL)
	}

	// Then each event of the task, not those of others, as written.
	started := xadd(t, b.rdb, "default", events.Event{Kind: events.Started, TaskID: "t1", Type: tasks.TypeProcessData, Attempt: 1})
	xadd(t, b.rdb, "default", events.Event{Kind: events.Progress, TaskID: "other", Percent: 20})
	progress := xadd(t, b.rdb, "default", events.Event{Kind: events.Progress, TaskID: "t1", Attempt: 1, Percent: 40, Message: "rendering"})
	done := xadd(t, b.rdb, "default", events.Event{Kind: events.Succeeded, TaskID: "t1", Attempt: 1, Result: []byte(`{"ok":true}`)})
	for _, want := range []struct {
		id   string
		kind events.Kind
	}{{started, events.Started}, {progress, events.Progress}, {done, events.Succeeded}} {
		e, ok := s.next(t, 5*time.Second)
		if !ok {
			t.Fatalf("the stream ended before the %s event", want.kind)
		}
		got := decodeEvent(t, e)
		if e.ID != want.id || e.Name != string(want.kind) || got.Kind != want.kind || got.TaskID != "t1" || got.ID != want.id {
			t.Fatalf("event %+v (%+v), want %s with id %s", e, got, want.kind, want.id)
		}
		switch got.Kind {
		case events.Progress:
			if got.Percent != 40 || got.Message != "rendering" {
				t.Errorf("progress %+v", got)
			}
		case events.Succeeded:
			if string(got.Result) != `{"ok":true}` || !strings.Contains(e.Data, `"result":{"ok":true}`) {
				t.Errorf("succeeded event data %s", e.Data)
			}
		}
	}
	// The final event ends the stream.
	s.wantEnd(t, 5*time.Second)

	// Resumed after the progress event: the rest, then the end.
	s = openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": progress})
	if e, ok := s.next(t, 5*time.Second); !ok || e.ID != done || e.Name != "succeeded" {
		t.Fatalf("resumed after %s: %+v, want the succeeded event %s", progress, e, done)
	}
	s.wantEnd(t, 5*time.Second)
}

func TestTaskEventsFinal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := pendingTask(t, b.rdb, "default", "t2")
	first := xadd(t, b.rdb, "default", events.Event{Kind: events.Started, TaskID: "t2", Attempt: 1})
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	if err := insp.ArchiveTask("default", "t2"); err != nil {
		t.Fatal(err)
	}
	archived := xadd(t, b.rdb, "default", events.Event{Kind: events.Archived, TaskID: "t2", Attempt: 1, Error: "boom"})

	t.Run("state of a final task", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, path, nil)
		e, _ := s.next(t, 5*time.Second)
		if e.Name != "state" || e.ID != entryOf(archived) || !strings.Contains(e.Data, `"state":"archived"`) {
			t.Fatalf("event %+v, want the archived state", e)
		}
		s.wantEnd(t, 5*time.Second)
	})
	t.Run("resumed with newer events", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": first})
		e, ok := s.next(t, 5*time.Second)
		if !ok || e.ID != archived || decodeEvent(t, e).Error != "boom" {
			t.Fatalf("event %+v, want the archived event", e)
		}
		s.wantEnd(t, 5*time.Second)
	})
	t.Run("resumed with nothing newer", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": archived})
		if s.resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d, want 204", s.resp.StatusCode)
		}
	})
	t.Run("resumed for an unknown task", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, "/api/tasks/default/unknown/events", map[string]string{"Last-Event-ID": first})
		if s.resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", s.resp.StatusCode)
		}
	})
	t.Run("resumed for a task gone", func(t *testing.T) {
		path := pendingTask(t, b.rdb, "default", "t2-gone")
		seen := xadd(t, b.rdb, "default", events.Event{Kind: events.Started, TaskID: "t2-gone", Attempt: 1})
		if err := insp.DeleteTask("default", "t2-gone"); err != nil {
			t.Fatal(err)
		}
		s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": seen})
		if s.resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d, want 204", s.resp.StatusCode)
		}
	})
	t.Run("resumed for a final task without its final event", func(t *testing.T) {
		// Its end is in asynq, not (yet) in the stream: the client has not
		// seen it, and gets the final state rather than a 204.
		path := pendingTask(t, b.rdb, "default", "t2-quiet")
		seen := xadd(t, b.rdb, "default", events.Event{Kind: events.Started, TaskID: "t2-quiet", Attempt: 1})
		if err := insp.ArchiveTask("default", "t2-quiet"); err != nil {
			t.Fatal(err)
		}
		s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": seen})
		e, ok := s.next(t, 5*time.Second)
		if s.resp.StatusCode != http.StatusOK || !ok || e.Name != "state" || !strings.Contains(e.Data, `"state":"archived"`) {
			t.Fatalf("status %d, event %+v; want 200 and the archived state", s.resp.StatusCode, e)
		}
		s.wantEnd(t, 5*time.Second)
	})
}

func TestTaskEventsErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	pendingTask(t, b.rdb, "default", "t3")
	tests := []struct {
		name       string
		give       req
		wantStatus int
		wantCode   string
	}{
		{"unknown task", req{Path: "/api/tasks/default/nope/events", User: testUser, Pass: testPass}, http.StatusNotFound, "not_found"},
		{"unknown queue", req{Path: "/api/tasks/nope/t3/events", User: testUser, Pass: testPass}, http.StatusNotFound, "not_found"},
		{"bad id", req{Path: "/api/tasks/default/a%01b/events", User: testUser, Pass: testPass}, http.StatusBadRequest, "invalid_task_ref"},
		{"no credentials", req{Path: "/api/tasks/default/t3/events"}, http.StatusUnauthorized, "unauthorized"},
		{"wrong password", req{Path: "/api/tasks/default/t3/events", User: testUser, Pass: "nope"}, http.StatusUnauthorized, "invalid_credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, b.send(t, tt.give), tt.wantStatus, tt.wantCode)
		})
	}
	t.Run("basic auth", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, "/api/tasks/default/t3/events", map[string]string{"user": "1"})
		if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
			t.Fatalf("event %+v, want the state", e)
		}
	})
	t.Run("session", func(t *testing.T) {
		s := openEvents(t, b.ts.URL, "/api/tasks/default/t3/events",
			map[string]string{"Cookie": web.SessionCookie + "=" + b.login(t)})
		if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
			t.Fatalf("event %+v, want the state", e)
		}
	})
}

// TestTaskEventsHeartbeatAndCheck checks the heartbeat comments, and that
// the state check shows the end of a task whose worker publishes no
// events.
func TestTaskEventsHeartbeatAndCheck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	web.SetEventTiming(b.srv, 20*time.Millisecond, 100*time.Millisecond)
	path := pendingTask(t, b.rdb, "default", "t4")
	s := openEvents(t, b.ts.URL, path, nil)
	if e, _ := s.next(t, 5*time.Second); e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	// Heartbeats, through several state checks: a pending task's state
	// is not sent again (its next_process_at, the time of each read, is
	// no change).
	beats := 0
	for deadline := time.After(10 * time.Second); beats < 75; {
		select {
		case e := <-s.events:
			switch {
			case e.Comment == "heartbeat":
				beats++
			case e.Name != "":
				t.Fatalf("event %+v for a pending task that did not change, want only heartbeats", e)
			}
		case <-deadline:
			t.Fatalf("%d heartbeats in 10s, want 75", beats)
		}
	}
	// Archived with no event: a check sends the final state, and the
	// stream ends.
	if err := asynq.NewInspectorFromRedisClient(b.rdb).ArchiveTask("default", "t4"); err != nil {
		t.Fatal(err)
	}
	e, ok := s.next(t, 5*time.Second)
	if !ok || e.Name != "state" || e.HasID || !strings.Contains(e.Data, `"state":"archived"`) {
		t.Fatalf("event %+v, want the archived state without an id", e)
	}
	s.wantEnd(t, 5*time.Second)
}

// TestTaskEventsOutliveTimeouts serves the stream from an http.Server
// whose read and write timeouts are far shorter than the stream: it goes
// on past them.
func TestTaskEventsOutliveTimeouts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	web.SetEventTiming(b.srv, 50*time.Millisecond, time.Hour)
	ts := httptest.NewUnstartedServer(b.srv.Handler())
	ts.Config.ReadTimeout = 300 * time.Millisecond
	ts.Config.WriteTimeout = 300 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	path := pendingTask(t, b.rdb, "default", "t5")
	s := openEvents(t, ts.URL, path, nil)
	if e, _ := s.next(t, 5*time.Second); e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	time.Sleep(time.Second)
	id := xadd(t, b.rdb, "default", events.Event{Kind: events.Progress, TaskID: "t5", Percent: 50})
	if e, ok := s.next(t, 5*time.Second); !ok || e.ID != id {
		t.Fatalf("after 1s: %+v (open %v), want the progress event %s", e, ok, id)
	}
}

// TestTaskEventsEndAtShutdown checks that Run's shutdown ends an open
// stream at once instead of waiting for it until ShutdownTimeout.
func TestTaskEventsEndAtShutdown(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	srv, err := web.New(web.Options{Addr: "127.0.0.1:0", Manager: m, Logger: zaptest.NewLogger(t), ShutdownTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	path := pendingTask(t, rdb, "default", "t6")
	s := openEvents(t, "http://"+srv.Addr(), path, nil)
	if e, _ := s.next(t, 5*time.Second); e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	start := time.Now()
	cancel()
	s.wantEnd(t, 5*time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its ctx ending")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the shutdown took %v with a stream open", took)
	}
}

// TestTaskEventsPublished reads events that package events' Publisher
// wrote, so that the handler's reading of the stream format (the task id
// field of a resumed request) follows the publisher's.
func TestTaskEventsPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := pendingTask(t, b.rdb, "q7", "t7")
	pub := events.NewPublisher(b.rdb, events.PublisherOptions{})
	t.Cleanup(func() { pub.Close() })
	pub.Publish(events.Event{Kind: events.Started, Queue: "q7", TaskID: "t7", Attempt: 1, Time: time.Now()})
	if err := pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, err := b.rdb.XRevRangeN(context.Background(), events.StreamKey("q7"), "+", "-", 1).Result()
	if err != nil || len(first) != 1 {
		t.Fatalf("stream: %v %v", first, err)
	}
	if err := asynq.NewInspectorFromRedisClient(b.rdb).ArchiveTask("q7", "t7"); err != nil {
		t.Fatal(err)
	}
	pub.Publish(events.Event{Kind: events.Cancelled, Queue: "q7", TaskID: "t7", Attempt: 1, Error: "cancelled by test", Time: time.Now()})
	if err := pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": first[0].ID})
	e, ok := s.next(t, 5*time.Second)
	if !ok || e.Name != "cancelled" || decodeEvent(t, e).Error != "cancelled by test" {
		t.Fatalf("event %+v (status %d), want the cancelled event", e, s.resp.StatusCode)
	}
	s.wantEnd(t, 5*time.Second)
}

// TestTaskEventsLastEventID checks the Last-Event-ID a stream accepts: an
// event's ID ("<ms>-<seq>:<index>") or a stream position ("<ms>-<seq>"),
// and the 400 of anything else, naming the header and the value.
func TestTaskEventsLastEventID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := pendingTask(t, b.rdb, "default", "t8")
	t.Run("accepted", func(t *testing.T) {
		for _, give := range []string{"1733571234567-0:0", "1733571234567-3:12", "1733571234567-0", "0-0"} {
			s := openEvents(t, b.ts.URL, path, map[string]string{"Last-Event-ID": give})
			if s.resp.StatusCode != http.StatusOK {
				t.Errorf("Last-Event-ID %q: status %d, want 200", give, s.resp.StatusCode)
			}
			s.cancel()
		}
	})
	tests := []struct {
		name        string
		give        string
		wantMessage string
	}{
		{"not an id", "12; DROP", `Last-Event-ID "12; DROP" is not an event id of this stream (such as 1733571234567-0:0)`},
		{"bad index", "1733571234567-0:x", `Last-Event-ID "1733571234567-0:x" is not an event id`},
		{"negative index", "1733571234567-0:-1", `Last-Event-ID "1733571234567-0:-1" is not an event id`},
		{"escaped", "1-0\u00e9\"", `Last-Event-ID "1-0é\"" is not an event id`},
		{"too long", strings.Repeat("1", 100) + "-0", "Last-Event-ID: 102 bytes, longer than any event id of this stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := wantError(t, b.send(t, req{Path: path, Header: map[string]string{"Last-Event-ID": tt.give}}),
				http.StatusBadRequest, "bad_request")
			if !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("message %q, want it to contain %q", msg, tt.wantMessage)
			}
		})
	}
}

// TestTaskEventsEndWithSession checks that an open stream ends once its
// session does (a logout, its expiry), and that the client's reconnection
// then gets 401; a stream authenticated by basic auth goes on.
func TestTaskEventsEndWithSession(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth, func(o *web.Options) { o.SessionTTL = time.Hour })
	web.SetEventTiming(b.srv, 20*time.Millisecond, 20*time.Millisecond)
	path := pendingTask(t, b.rdb, "default", "t9")
	open := func(t *testing.T, h map[string]string) *sseStream {
		t.Helper()
		s := openEvents(t, b.ts.URL, path, h)
		if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
			t.Fatalf("event %+v (status %d), want the state", e, s.resp.StatusCode)
		}
		return s
	}
	t.Run("logout", func(t *testing.T) {
		cookie := b.login(t)
		s := open(t, map[string]string{"Cookie": web.SessionCookie + "=" + cookie})
		basic := open(t, map[string]string{"user": "1"})
		if resp := b.send(t, req{Method: http.MethodPost, Path: "/logout", Cookie: cookie}); resp.Status != http.StatusOK {
			t.Fatalf("logout: status %d", resp.Status)
		}
		s.wantEnd(t, 10*time.Second)
		wantError(t, b.send(t, req{Path: path, Cookie: cookie}), http.StatusUnauthorized, "unauthorized")

		// The basic-auth stream, checked as often, goes on.
		basic.wantHeartbeat(t, 5*time.Second)
	})
	t.Run("expiry", func(t *testing.T) {
		cookie := b.login(t)
		s := open(t, map[string]string{"Cookie": web.SessionCookie + "=" + cookie})
		// The stream's checks read the session without sliding its
		// expiry: after two of them, the hour since the login runs out.
		b.mr.FastForward(59 * time.Minute)
		reads := func() uint64 { return b.m.Stats().Ops[cachemgr.OpSession].Hits }
		for n, deadline := reads(), time.Now().Add(5*time.Second); reads() < n+2; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the stream read its session fewer than twice in 5s")
			}
		}
		b.mr.FastForward(2 * time.Minute)
		s.wantEnd(t, 10*time.Second)
		wantError(t, b.send(t, req{Path: path, Cookie: cookie}), http.StatusUnauthorized, "unauthorized")
	})
}

// TestTaskEventsMetrics checks that a stream counts in
// forgeq_http_requests_total but not in
// forgeq_http_request_duration_seconds, which times the other requests
// of the route.
func TestTaskEventsMetrics(t *testing.T) {
	t.Parallel()
	var x *metrics.Metrics
	b := setup(t, func(o *web.Options) {
		var err error
		if x, err = metrics.New(metrics.Options{Manager: o.Manager}); err != nil {
			t.Fatal(err)
		}
		o.Middleware = x.HTTPMiddleware(nil)
	})
	web.SetEventTiming(b.srv, time.Hour, 20*time.Millisecond)
	path := pendingTask(t, b.rdb, "default", "t10")
	s := openEvents(t, b.ts.URL, path, nil)
	if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	// Archived: a state check sends the final state, and the stream ends.
	if err := asynq.NewInspectorFromRedisClient(b.rdb).ArchiveTask("default", "t10"); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := s.next(t, 5*time.Second); !ok {
			break
		}
	}
	wantError(t, b.send(t, req{Path: "/api/tasks/default/nope/events"}), http.StatusNotFound, "not_found")

	const route = `method="GET",route="GET /api/tasks/{queue}/{id}/events"`
	want := map[string]float64{
		`forgeq_http_requests_total{code="2xx",` + route + `}`:      1,
		`forgeq_http_requests_total{code="4xx",` + route + `}`:      1,
		`forgeq_http_request_duration_seconds_count{` + route + `}`: 1, // the 404
	}
	// The stream is counted once its handler has returned, which may be
	// just after its client saw the end.
	var got map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = gatherRoute(t, x, route)
		if cmp.Equal(want, got) || time.Now().After(deadline) {
			break
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics of the route (-want +got):\n%s", diff)
	}
}

// gatherRoute returns the request counts and the duration sample counts
// of x whose labels end with labels.
func gatherRoute(tb testing.TB, x *metrics.Metrics, labels string) map[string]float64 {
	tb.Helper()
	mfs, err := x.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var pairs []string
			for _, lp := range m.GetLabel() {
				pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(pairs)
			set := strings.Join(pairs, ",")
			if !strings.HasSuffix(set, labels) {
				continue
			}
			switch mf.GetName() {
			case "forgeq_http_requests_total":
				out[mf.GetName()+"{"+set+"}"] = m.GetCounter().GetValue()
			case "forgeq_http_request_duration_seconds":
				out[mf.GetName()+"_count{"+set+"}"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestTaskEventsCloseStreams serves the handler on an http.Server of the
// test's own that calls CloseStreams when it shuts down: its Shutdown
// ends the open stream and returns, instead of waiting for the stream
// until its ctx ends.
func TestTaskEventsCloseStreams(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hs := &http.Server{Handler: b.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	hs.RegisterOnShutdown(b.srv.CloseStreams)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })

	path := pendingTask(t, b.rdb, "default", "t11")
	s := openEvents(t, "http://"+ln.Addr().String(), path, nil)
	if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	// A ctx far longer than the test: Shutdown returning nil means it
	// did not wait for it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(ctx) }()
	s.wantEnd(t, 30*time.Second)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v, want nil", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v, want http.ErrServerClosed", err)
	}

	// Closing again does nothing; streams opened on another server of
	// the same Server now end after their first events.
	b.srv.CloseStreams()
	s = openEvents(t, b.ts.URL, path, nil)
	if e, ok := s.next(t, 5*time.Second); !ok || e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	s.wantEnd(t, 5*time.Second)
}
