package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/events"
)

// Timing of GET /api/tasks/{queue}/{id}/events.
const (
	// eventsHeartbeat is how often an open stream sends a comment line, so
	// that proxies and load balancers do not close it as idle.
	eventsHeartbeat = 15 * time.Second
	// eventsStateCheck is how often an open stream reads the task's state,
	// as a safety net for workers with events off and for events trimmed
	// from the stream: a state that changed is sent as a "state" event.
	eventsStateCheck = 2 * time.Second
	// eventsWriteTimeout bounds each write to the client, instead of the
	// server's WriteTimeout, which would end every stream after a minute.
	eventsWriteTimeout = 30 * time.Second
	// eventsRetry is the reconnection delay, in milliseconds, that the
	// stream asks EventSource clients to use.
	eventsRetry = 1000
)

// stateEvent is the name of the snapshot events of the task's state; the
// other events are named after their kind (events.Kind).
const stateEvent = "state"

// maxEventID bounds the Last-Event-ID a 400 answer repeats: an event's ID
// (events.CheckID) is at most 47 bytes.
const maxEventID = 64

// eventTiming is the timing of the task event streams.
type eventTiming struct {
	heartbeat, stateCheck time.Duration
}

// eventTiming returns the timing of the event streams: the defaults, or
// what a test set (export_test.go).
func (s *Server) eventTiming() eventTiming {
	t := eventTiming{heartbeat: eventsHeartbeat, stateCheck: eventsStateCheck}
	if d := s.heartbeat.Load(); d > 0 {
		t.heartbeat = time.Duration(d)
	}
	if d := s.stateCheck.Load(); d > 0 {
		t.stateCheck = time.Duration(d)
	}
	return t
}

// taskEvents serves GET /api/tasks/{queue}/{id}/events: the task's events
// as Server-Sent Events (text/event-stream), each with its events.Event
// ID as its id, its kind as its name and events.Event's JSON form as its
// data.
//
// A request without Last-Event-ID first gets a "state" event, the body of
// GET /api/tasks/{queue}/{id}, whose id is the stream's position when it
// was read; then the events after it. A request with Last-Event-ID (an
// EventSource reconnecting) gets the events after that id, an event's ID
// or a stream position (events.CheckID; anything else: 400). The stream ends
// after the task's final event (succeeded, archived, cancelled), or after
// a "state" event of a final task; a request with Last-Event-ID for a task
// that is final, or gone from Redis, with no newer event gets the final
// "state" when the stream holds no final event of it (the client has not
// seen the end), 404 when the task is in neither, and otherwise 204, which
// stops EventSource's reconnecting. Unknown task: 404.
//
// A comment line every eventsHeartbeat keeps the connection open; the
// task's state is read every eventsStateCheck and sent again as a "state"
// event (without an id) when it changed, so that a task whose worker has
// events off, or whose events were trimmed, still shows its end. At each
// of these checks the request's authentication is checked again (recheck):
// the stream ends once its session has (a logout, its expiry), and the
// client's reconnection gets 401. CloseStreams (the server's shutdown) ends
// every open stream.
func (s *Server) taskEvents(w http.ResponseWriter, r *http.Request) {
	queue, id, ok := taskRef(w, r)
	if !ok {
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last != "" {
		if msg := checkLastEventID(last); msg != "" {
			fail(w, r, http.StatusBadRequest, codeBadRequest, msg)
			return
		}
	}
	ctx := r.Context()
	var (
		after string
		state *taskBody
	)
	if last == "" {
		// The stream's position first, then the state: whatever happens
		// after the state was read is in the stream after the position.
		var err error
		if after, err = s.streamTail(ctx, queue); err != nil {
			s.unavailable(w, r, "task events", err)
			return
		}
		body, err := s.readTask(r, queue, id)
		switch {
		case errors.Is(err, errNoTask):
			fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no task %q in queue %q", id, queue))
			return
		case err != nil:
			s.unavailable(w, r, "task queue", err)
			return
		}
		state = &body
	} else {
		after = last
		body, err := s.readTask(r, queue, id)
		switch {
		case err == nil && !finalState(body.State):
		case err == nil, errors.Is(err, errNoTask):
			// Final, or gone: only newer events of it are left to send.
			newer, serr := s.hasNewer(ctx, queue, id, after)
			if serr != nil {
				s.unavailable(w, r, "task events", serr)
				return
			}
			if newer {
				break
			}
			final, seen, serr := s.events.Lookup(ctx, queue, id)
			switch {
			case serr != nil:
				s.unavailable(w, r, "task events", serr)
				return
			case err != nil && !seen:
				// Neither in Redis nor in the stream: an unknown task.
				fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no task %q in queue %q", id, queue))
				return
			case err == nil && final.ID == "":
				// Final, but its final event is not in the stream (not
				// written yet, trimmed, or events off): the client has
				// not seen the end. Send it the final state.
				state = &body
			default:
				// The client has had the final event, or the task is
				// gone with no final event to send: nothing more.
				w.WriteHeader(http.StatusNoContent)
				return
			}
		default:
			s.unavailable(w, r, "task queue", err)
			return
		}
	}

	rc := http.NewResponseController(w)
	// A stream outlives the server's read and write timeouts: the read
	// deadline would cancel ctx, and each write gets a deadline of its own.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: rc}
	sw.retry(eventsRetry)
	if state != nil {
		sw.event(after, stateEvent, state)
		if finalState(state.State) {
			sw.flush()
			return
		}
	}
	if sw.flush() != nil {
		return
	}
	s.followEvents(r, sw, queue, id, after, state)
}

// followEvents sends the events of task id of queue after the stream id
// after until a final one, the client leaves, or the server shuts down.
// state is the last state sent, if any.
//
// Its reads (the blocking reads of the stream, the state checks) run
// outside the request's span: they would make it a trace as long as the
// stream, with Redis spans every few seconds. The request's span still
// covers the whole stream and its first reads.
func (s *Server) followEvents(r *http.Request, sw *sseWriter, queue, id, after string, state *taskBody) {
	ctx, cancel := context.WithCancel(trace.ContextWithSpanContext(r.Context(), trace.SpanContext{}))
	defer cancel()
	r = r.WithContext(ctx)
	evs := make(chan events.Event)
	go func() {
		for e, err := range s.events.Watch(ctx, queue, id, after) {
			if err != nil {
				return // ctx ended: so does the handler
			}
			select {
			case evs <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	timing := s.eventTiming()
	heartbeat := time.NewTicker(timing.heartbeat)
	defer heartbeat.Stop()
	check := time.NewTicker(timing.stateCheck)
	defer check.Stop()
	finalSeen := false // a check found the task final or gone, with no final event yet
	quiet := true      // no event came since the last check
	for {
		select {
		case e := <-evs:
			sw.event(e.ID, string(e.Kind), e)
			if sw.flush() != nil || e.Final() {
				return
			}
			quiet = false
		case <-heartbeat.C:
			sw.comment("heartbeat")
			if sw.flush() != nil {
				return
			}
		case <-check.C:
			if !s.stillAuthenticated(r) {
				sw.comment("the session has ended")
				_ = sw.flush()
				return
			}
			body, err := s.readTask(r, queue, id)
			switch {
			case errors.Is(err, errNoTask):
				// Gone without a final event (no retention, or
				// deleted): give the event a check's time to arrive.
				if finalSeen {
					sw.comment("the task is gone from Redis")
					_ = sw.flush()
					return
				}
				finalSeen = true
				continue
			case err != nil:
				if ctx.Err() == nil {
					s.log.Debug("task events: state check failed", zap.String("request_id", stateOf(r).id),
						zap.String("task_id", id), zap.Error(err))
				}
				continue
			}
			final := finalState(body.State)
			if final && !finalSeen {
				// Its final event may be on its way: published as the
				// handler returned, before asynq stored the end.
				finalSeen = true
				continue
			}
			// While events come, the client knows what the state says.
			if (quiet || final) && (state == nil || !sameState(*state, body)) {
				state = &body
				sw.event("", stateEvent, state)
				if sw.flush() != nil {
					return
				}
			}
			quiet = true
			if final {
				return
			}
		case <-ctx.Done():
			return
		case <-s.streamsDone:
			return
		}
	}
}

// stillAuthenticated reports whether the request r of an open stream
// would still be let in (recheck). When Redis cannot tell, it would be
// neither let in nor refused: the stream goes on, and the next check asks
// again.
func (s *Server) stillAuthenticated(r *http.Request) bool {
	err := s.recheck(r.Context(), r)
	if err == nil || errors.Is(err, errAuthUnavailable) {
		return true
	}
	s.log.Debug("task events: authentication ended", zap.String("request_id", stateOf(r).id), zap.Error(err))
	return false
}

// checkLastEventID returns what is wrong with last, a Last-Event-ID: ""
// when it is an event's ID or a stream position (events.CheckID).
func checkLastEventID(last string) string {
	const example = "such as 1733571234567-0:0"
	if len(last) > maxEventID {
		return fmt.Sprintf("Last-Event-ID: %d bytes, longer than any event id of this stream (%s)", len(last), example)
	}
	if events.CheckID(last) != nil {
		return fmt.Sprintf("Last-Event-ID %q is not an event id of this stream (%s)", last, example)
	}
	return ""
}

// streamTail returns the id of the last entry of queue's event stream,
// "0-0" when it is empty.
func (s *Server) streamTail(ctx context.Context, queue string) (string, error) {
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	return s.events.LastID(ctx, queue)
}

// hasNewer reports whether queue's event stream has an event of task id
// after the stream id after.
func (s *Server) hasNewer(ctx context.Context, queue, id, after string) (bool, error) {
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	return s.events.HasNewer(ctx, queue, id, after)
}

// finalState reports whether a task in asynq state st has ended.
func finalState(st string) bool { return st == "completed" || st == "archived" }

// sameState reports whether a and b, two reads of a task's state, show
// the same thing. The next_process_at of a pending task, which asynq gives
// as the time of the read, is left out.
func sameState(a, b taskBody) bool {
	if a.State == "pending" && b.State == "pending" {
		a.NextProcessAt, b.NextProcessAt = nil, nil
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// sseWriter writes Server-Sent Events. A write error ends the stream: it
// is kept and returned by flush.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
	err error
}

// event adds an event named name with data v as JSON, and id unless it
// is "".
func (sw *sseWriter) event(id, name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		sw.err = err // unreachable: the types sent marshal
		return
	}
	if id != "" {
		sw.buf.WriteString("id: " + id + "\n")
	}
	// JSON has no raw newline: the data is one line.
	sw.buf.WriteString("event: " + name + "\ndata: ")
	sw.buf.Write(data)
	sw.buf.WriteString("\n\n")
}

// comment adds a comment line, which clients ignore.
func (sw *sseWriter) comment(text string) { sw.buf.WriteString(": " + text + "\n\n") }

// retry adds the reconnection delay in milliseconds.
func (sw *sseWriter) retry(ms int) { fmt.Fprintf(&sw.buf, "retry: %d\n\n", ms) }

// flush writes what was added and flushes it to the client, within
// eventsWriteTimeout.
func (sw *sseWriter) flush() error {
	if sw.err != nil {
		return sw.err
	}
	// Not every ResponseWriter wrapper passes deadlines on: then the
	// server's WriteTimeout applies.
	_ = sw.rc.SetWriteDeadline(time.Now().Add(eventsWriteTimeout))
	if sw.buf.Len() > 0 {
		if _, err := sw.w.Write(sw.buf.Bytes()); err != nil {
			sw.err = err
			return err
		}
		sw.buf.Reset()
	}
	if err := sw.rc.Flush(); err != nil {
		sw.err = err
	}
	return sw.err
}

// CloseStreams ends every open task event stream (GET
// /api/tasks/{queue}/{id}/events) at once, and every stream opened after
// it right after its first events: their clients reconnect with their
// Last-Event-ID, to another instance or once the server is back. Run calls
// it when its shutdown begins. A program that serves Handler on an
// http.Server of its own registers it, so that the server's Shutdown does
// not wait for open streams, which never go idle, until its ctx ends:
//
//	hs := &http.Server{Handler: s.Handler()}
//	hs.RegisterOnShutdown(s.CloseStreams)
//
// Calling it again does nothing. It is safe for concurrent use.
func (s *Server) CloseStreams() { s.endStreams.Do(func() { close(s.streamsDone) }) }
