package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// enqueueRequest is the body of POST /api/tasks/{type}. Every field but
// payload is optional; durations are Go durations ("90s", "1h30m"), times
// RFC 3339.
type enqueueRequest struct {
	Payload   json.RawMessage `json:"payload"`    // the task's payload, a JSON object; absent: {}
	Queue     string          `json:"queue"`      // default: the type's queue
	ID        string          `json:"id"`         // default: a random UUID; a taken id is a 409
	Delay     string          `json:"delay"`      // run no sooner than this from now
	ProcessAt string          `json:"process_at"` // run no sooner than this time (not with delay)
	Unique    string          `json:"unique"`     // refuse (409) an equal task (type, payload, queue) for this long
	MaxRetry  *int            `json:"max_retry"`  // default: the type's
	Timeout   string          `json:"timeout"`    // default: the type's
	Deadline  string          `json:"deadline"`   // a time the task must finish by
	Retention string          `json:"retention"`  // how long it stays readable once completed; default Options.TaskRetention

	// Deduplication (tasks.Dedup): while a task enqueued with dedup_key
	// waits in the queue, another with the key does what dedup_mode says.
	DedupKey      string `json:"dedup_key"`
	DedupMode     string `json:"dedup_mode"`      // keep (default), replace or debounce
	DedupRelease  string `json:"dedup_release"`   // start (default) or finish
	DedupMaxDelay string `json:"dedup_max_delay"` // debounce: the latest run time, from the first enqueue
}

// enqueuedBody is the 202 body of POST /api/tasks/{type}.
type enqueuedBody struct {
	ID        string     `json:"id"`
	Queue     string     `json:"queue"`
	Type      string     `json:"type"`
	State     string     `json:"state"`                // "pending" or "scheduled"
	ProcessAt *time.Time `json:"process_at,omitempty"` // when scheduled
	StatusURL string     `json:"status_url"`           // GET it for the task's state
	EventsURL string     `json:"events_url"`           // GET it for the task's events (Server-Sent Events)
	PageURL   string     `json:"page_url"`             // the task's page, which follows its events
	// Deduplicated is the mode applied when the dedup key was held by a
	// waiting task (keep, replace or debounce): the body then describes
	// that task, and no new one was made.
	Deduplicated string `json:"deduplicated,omitempty"`
}

// taskBuilder is a task type POST /api/tasks/{type} builds tasks of: a
// registered *tasks.Definition, or a tasks.PublishedType of the task
// catalogue.
type taskBuilder interface {
	Defaults() []asynq.Option
	NewTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error)
}

// enqueue validates and enqueues one task of a registered type, or of a
// type a worker published to the task catalogue. Nothing is enqueued
// unless the answer is 202.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	def, ok := s.lookupType(w, r, typ)
	if !ok {
		return
	}
	var req enqueueRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	now := time.Now()
	opts, err := req.options(now)
	if err == nil {
		err = req.checkDedup(opts, now)
	}
	if err != nil {
		fail(w, r, http.StatusBadRequest, codeInvalidOption, err.Error())
		return
	}
	if req.Retention == "" && !hasOption(def.Defaults(), asynq.RetentionOpt) {
		opts = append(opts, asynq.Retention(s.o.TaskRetention))
	}
	payload := []byte(req.Payload)
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		payload = []byte("{}")
	}
	task, err := def.NewTask(payload, opts...)
	if err != nil {
		// "tasks: invalid payload: data:process: missing required field ..."
		fail(w, r, http.StatusBadRequest, codeInvalidPayload, strings.TrimPrefix(err.Error(), "tasks: "))
		return
	}
	// Bounded like a cache call: on a Redis that does not answer, the
	// client gets its 503 after one socket timeout, not after go-redis's
	// retries.
	ctx, cancel := s.redisCtx(r.Context())
	var info *asynq.TaskInfo
	dedupMode := ""
	if req.dedup() != nil {
		info, dedupMode, err = s.enqueueDedup(ctx, def, task, opts, req.dedup())
	} else {
		info, err = s.client.EnqueueContext(ctx, task)
	}
	cancel()
	switch {
	case errors.Is(err, tasks.ErrDedupConflict):
		var be *tasks.BatchError
		msg := err.Error()
		if errors.As(err, &be) {
			msg = strings.TrimPrefix(be.Err.Error(), "tasks: ")
		}
		fail(w, r, http.StatusConflict, codeConflict, msg)
		return
	case errors.Is(err, asynq.ErrDuplicateTask):
		fail(w, r, http.StatusConflict, codeConflict,
			fmt.Sprintf("an equal %s task is already queued and unique for up to %s", typ, req.Unique))
		return
	case errors.Is(err, asynq.ErrTaskIDConflict):
		fail(w, r, http.StatusConflict, codeConflict, fmt.Sprintf("task id %q is taken", req.ID))
		return
	case err != nil:
		s.unavailable(w, r, "task queue", err)
		return
	}
	body := enqueuedBody{
		ID:           info.ID,
		Queue:        info.Queue,
		Type:         info.Type,
		State:        info.State.String(),
		StatusURL:    statusURL(info.Queue, info.ID),
		EventsURL:    eventsURL(info.Queue, info.ID),
		PageURL:      taskPageURL(info.Queue, info.ID),
		Deduplicated: dedupMode,
	}
	if dedupMode != "" && s.o.OnDeduplicated != nil {
		s.o.OnDeduplicated(info.Type, info.Queue, dedupMode)
	}
	if info.State == asynq.TaskStateScheduled {
		t := info.NextProcessAt.UTC()
		body.ProcessAt = &t
	}
	w.Header().Set("Location", body.StatusURL)
	s.log.Info("task enqueued", append([]zap.Field{zap.String("request_id", stateOf(r).id),
		zap.String("task_id", info.ID), zap.String("task_type", info.Type), zap.String("queue", info.Queue)},
		telemetry.TraceFields(r.Context())...)...)
	writeJSON(w, http.StatusAccepted, body)
}

// lookupType returns the registered type typ or, failing that, the one
// published to the task catalogue. It answers the request itself when
// neither has it (400 unknown_task_type, naming both lists), when the
// catalogue cannot be read (503) or its entry of typ is unusable (500).
func (s *Server) lookupType(w http.ResponseWriter, r *http.Request, typ string) (taskBuilder, bool) {
	if def, ok := s.reg.Lookup(typ); ok {
		return def, true
	}
	ctx, cancel := s.redisCtx(r.Context())
	p, err := s.o.Catalog.Lookup(ctx, typ)
	cancel()
	var unpub *tasks.UnpublishedError
	switch {
	case errors.As(err, &unpub):
		local := s.reg.Types()
		published := "none"
		if len(unpub.Published) > 0 {
			published = strings.Join(unpub.Published, ", ")
		}
		msg := fmt.Sprintf("unknown task type %q (known: %s): no worker has ever published it to the task catalogue (published: %s)",
			typ, strings.Join(local, ", "), published)
		if sug := tasks.SuggestType(typ, append(local, unpub.Published...)); sug != "" {
			msg += fmt.Sprintf("; did you mean %q?", sug)
		}
		fail(w, r, http.StatusBadRequest, codeUnknownTaskType, msg)
		return nil, false
	case errors.Is(err, tasks.ErrInvalidCatalogEntry):
		s.log.Warn("task catalogue entry unusable", zap.String("request_id", stateOf(r).id),
			zap.String("task_type", typ), zap.Error(err))
		fail(w, r, http.StatusInternalServerError, codeInternal,
			fmt.Sprintf("the published definition of task type %q cannot be read; a worker publishing it again replaces it", typ))
		return nil, false
	case err != nil:
		s.unavailable(w, r, "task catalogue", err)
		return nil, false
	}
	return p, true
}

// statusURL is the path of GET /api/tasks/{queue}/{id}.
func statusURL(queue, id string) string {
	return "/api/tasks/" + url.PathEscape(queue) + "/" + url.PathEscape(id)
}

// options turns the request's options into asynq's, checking each with
// the rules of every enqueue (tasks.CheckOption) at now, the reference
// for process_at and deadline. The error names the field and the value
// as given: `field "queue" "bad queue!": has a character outside ...`.
func (q enqueueRequest) options(now time.Time) ([]asynq.Option, error) {
	var opts []asynq.Option
	// add checks o, given as raw in field, and keeps it.
	add := func(field, raw string, o asynq.Option) error {
		if err := checkedAs(field, raw, tasks.CheckOption(o, now)); err != nil {
			return err
		}
		opts = append(opts, o)
		return nil
	}
	type duration struct {
		field, raw string
		option     func(time.Duration) asynq.Option
	}
	if q.Queue != "" {
		if err := add("queue", q.Queue, asynq.Queue(q.Queue)); err != nil {
			return nil, err
		}
	}
	if q.ID != "" {
		if err := add("id", q.ID, asynq.TaskID(q.ID)); err != nil {
			return nil, err
		}
	}
	if q.Delay != "" && q.ProcessAt != "" {
		return nil, errors.New(`give "delay" or "process_at", not both`)
	}
	for _, t := range [...]struct {
		field, raw string
		option     func(time.Time) asynq.Option
	}{{"process_at", q.ProcessAt, asynq.ProcessAt}, {"deadline", q.Deadline, asynq.Deadline}} {
		if t.raw == "" {
			continue
		}
		at, err := parseTime(t.field, t.raw)
		if err != nil {
			return nil, err
		}
		if err := add(t.field, t.raw, t.option(at)); err != nil {
			return nil, err
		}
	}
	if q.MaxRetry != nil {
		// asynq.MaxRetry makes a negative number 0: check the number.
		if err := checkedAs("max_retry", strconv.Itoa(*q.MaxRetry), tasks.CheckMaxRetry(*q.MaxRetry)); err != nil {
			return nil, err
		}
		opts = append(opts, asynq.MaxRetry(*q.MaxRetry))
	}
	for _, d := range [...]duration{
		{"delay", q.Delay, asynq.ProcessIn},
		{"unique", q.Unique, asynq.Unique},
		{"timeout", q.Timeout, asynq.Timeout},
		{"retention", q.Retention, asynq.Retention},
	} {
		if d.raw == "" {
			continue
		}
		v, err := parseDuration(d.field, d.raw)
		if err != nil {
			return nil, err
		}
		if err := add(d.field, d.raw, d.option(v)); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

// dedup returns the request's dedup options, nil when it gives none.
func (q enqueueRequest) dedup() *tasks.Dedup {
	if q.DedupKey == "" && q.DedupMode == "" && q.DedupRelease == "" && q.DedupMaxDelay == "" {
		return nil
	}
	d := &tasks.Dedup{Key: q.DedupKey, Mode: tasks.DedupMode(q.DedupMode), Release: tasks.DedupRelease(q.DedupRelease)}
	d.MaxDelay, _ = time.ParseDuration(q.DedupMaxDelay) // checkDedup has checked it
	return d
}

// checkDedup checks the request's dedup options with tasks.CheckDedup, for
// a task with opts (the request's checked options) at now.
func (q enqueueRequest) checkDedup(opts []asynq.Option, now time.Time) error {
	if q.dedup() == nil {
		return nil
	}
	if q.DedupKey == "" {
		return errors.New(`the dedup fields need "dedup_key"`)
	}
	if q.DedupMaxDelay != "" {
		if _, err := parseDuration("dedup_max_delay", q.DedupMaxDelay); err != nil {
			return err
		}
	}
	if q.Unique != "" {
		return errors.New(`give "dedup_key" or "unique", not both`)
	}
	var delay time.Duration
	for _, o := range opts {
		switch o.Type() {
		case asynq.ProcessInOpt:
			delay, _ = o.Value().(time.Duration)
		case asynq.ProcessAtOpt:
			at, _ := o.Value().(time.Time)
			delay = at.Sub(now)
		}
	}
	raw := map[string]string{"dedup_key": q.DedupKey, "dedup_mode": q.DedupMode, "dedup_release": q.DedupRelease, "dedup_max_delay": q.DedupMaxDelay}
	var oe *tasks.OptionError
	if err := tasks.CheckDedup(*q.dedup(), delay); errors.As(err, &oe) {
		return checkedAs(oe.Option, raw[oe.Option], err)
	}
	return nil
}

// enqueueDedup enqueues task, built by def with opts, with its dedup key
// (tasks.EnqueueBatch), and returns the task that holds the key and the
// mode applied when it was held ("": a new task).
func (s *Server) enqueueDedup(ctx context.Context, def taskBuilder, task *asynq.Task, opts []asynq.Option, d *tasks.Dedup) (*asynq.TaskInfo, string, error) {
	res, err := s.client.EnqueueBatch(ctx, s.o.Manager.Client(), []tasks.BatchItem{{
		Type: task.Type(), Payload: task.Payload(), Options: append(def.Defaults(), opts...), Dedup: d}})
	if err != nil {
		return nil, "", err
	}
	r := res[0]
	return &asynq.TaskInfo{ID: r.ID, Queue: r.Queue, Type: r.Type, State: r.State, NextProcessAt: r.ProcessAt}, string(r.Deduplicated), nil
}

// checkedAs returns err, the error of a tasks check, as the message of
// field given as raw; nil when err is.
func checkedAs(field, raw string, err error) error {
	var oe *tasks.OptionError
	if errors.As(err, &oe) {
		return oe.Named(fmt.Sprintf("field %q", field), raw)
	}
	return err
}

// parseDuration parses the Go duration s of field.
func parseDuration(field, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("field %q %q: not a duration such as \"90s\" or \"1h30m\"", field, s)
	}
	return d, nil
}

// parseTime parses the RFC 3339 time s of field.
func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q %q: not an RFC 3339 time such as \"2026-01-02T15:04:05Z\"", field, s)
	}
	return t, nil
}

// hasOption reports whether opts has an option of type t.
func hasOption(opts []asynq.Option, t asynq.OptionType) bool {
	for _, o := range opts {
		if o.Type() == t {
			return true
		}
	}
	return false
}

// taskBody is the body of GET /api/tasks/{queue}/{id}. Payload and result
// are embedded as JSON when they are JSON, else as a string.
type taskBody struct {
	ID            string          `json:"id"`
	Queue         string          `json:"queue"`
	Type          string          `json:"type"`
	State         string          `json:"state"` // pending, active, scheduled, retry, archived, completed, aggregating
	Payload       json.RawMessage `json:"payload,omitempty"`
	MaxRetry      int             `json:"max_retry"`
	Retried       int             `json:"retried"`
	LastError     string          `json:"last_error,omitempty"`
	LastFailedAt  *time.Time      `json:"last_failed_at,omitempty"`
	NextProcessAt *time.Time      `json:"next_process_at,omitempty"`
	CompletedAt   *time.Time      `json:"completed_at,omitempty"`
	Deadline      *time.Time      `json:"deadline,omitempty"`
	Timeout       string          `json:"timeout,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"`
	Progress      *tasks.Progress `json:"progress,omitempty"` // the task's last progress report
	EventsURL     string          `json:"events_url"`         // the task's events (Server-Sent Events)
	PageURL       string          `json:"page_url"`           // the task's page, which follows its events
}

// taskStatus answers the state, result, last error and progress of one
// task; 404 when the queue or the task does not exist (completed tasks
// stay for their retention only).
func (s *Server) taskStatus(w http.ResponseWriter, r *http.Request) {
	queue, id, ok := taskRef(w, r)
	if !ok {
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
	writeJSON(w, http.StatusOK, body)
}

// taskRef returns the {queue} and {id} of r's path, answering 400 itself
// when one cannot name a task.
func taskRef(w http.ResponseWriter, r *http.Request) (queue, id string, ok bool) {
	queue, id = r.PathValue("queue"), r.PathValue("id")
	for _, v := range [...]struct{ field, value string }{{"queue", queue}, {"id", id}} {
		if err := checkRef(v.field, v.value); err != nil {
			fail(w, r, http.StatusBadRequest, codeInvalidTaskRef, err.Error())
			return "", "", false
		}
	}
	return queue, id, true
}

// errNoTask is readTask's error for a queue or task that does not exist.
var errNoTask = errors.New("no such task")

// readTask reads the state of task id of queue and its last progress
// report, for the request r. Errors: errNoTask, or the Inspector's.
func (s *Server) readTask(r *http.Request, queue, id string) (taskBody, error) {
	ctx := r.Context()
	type progressResult struct {
		p   tasks.Progress
		err error
	}
	progress := make(chan progressResult, 1)
	go func() {
		p, err := tasks.ReadProgress(ctx, s.m, id)
		progress <- progressResult{p, err}
	}()
	// asynq's Inspector takes no ctx: the wait for it is bounded here, and
	// on a timeout its call finishes on its own.
	info, err := within(ctx, s.m.OpTimeout(), func() (*asynq.TaskInfo, error) {
		return s.inspector.GetTaskInfo(queue, id)
	})
	pr := <-progress
	switch {
	case errors.Is(err, asynq.ErrQueueNotFound), errors.Is(err, asynq.ErrTaskNotFound):
		return taskBody{}, errNoTask
	case err != nil:
		return taskBody{}, err
	}
	body := taskBody{
		ID:            info.ID,
		Queue:         info.Queue,
		Type:          info.Type,
		State:         info.State.String(),
		Payload:       jsonOrString(info.Payload),
		MaxRetry:      info.MaxRetry,
		Retried:       info.Retried,
		LastError:     info.LastErr,
		LastFailedAt:  timeOrNil(info.LastFailedAt),
		NextProcessAt: timeOrNil(info.NextProcessAt),
		CompletedAt:   timeOrNil(info.CompletedAt),
		Deadline:      timeOrNil(info.Deadline),
		Result:        jsonOrString(info.Result),
		EventsURL:     eventsURL(info.Queue, info.ID),
		PageURL:       taskPageURL(info.Queue, info.ID),
	}
	if info.Timeout > 0 {
		body.Timeout = info.Timeout.String()
	}
	switch {
	case pr.err == nil:
		body.Progress = &pr.p
	case !errors.Is(pr.err, cachemgr.ErrMiss) && ctx.Err() == nil:
		s.log.Warn("read task progress failed", zap.String("request_id", stateOf(r).id),
			zap.String("task_id", id), zap.Error(pr.err))
	}
	return body, nil
}

// checkRef checks a queue name or task id of a status request: it may have
// been enqueued by other means than this server, so only what no queue or
// id can hold is refused.
func checkRef(field, v string) error {
	switch {
	case len(v) > 1024:
		return fmt.Errorf("%s: %d bytes, over the 1024-byte limit", field, len(v))
	case !utf8.ValidString(v):
		return fmt.Errorf("%s: not valid UTF-8", field)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return fmt.Errorf("%s: %q contains a control character", field, v)
	}
	return nil
}

// jsonOrString returns b as JSON when it is JSON, else as a JSON string;
// nil when b is empty.
func jsonOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		var buf bytes.Buffer
		if json.Compact(&buf, b) == nil {
			return buf.Bytes()
		}
	}
	s, _ := json.Marshal(string(b)) // a string always marshals
	return s
}

// timeOrNil returns t in UTC, or nil when it is the zero time or the Unix
// epoch (asynq's "none").
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() || t.Unix() == 0 {
		return nil
	}
	t = t.UTC()
	return &t
}

// taskTypeBody describes one task type in GET /api/task-types.
type taskTypeBody struct {
	Type        string          `json:"type"`
	Description string          `json:"description"`
	Queue       string          `json:"queue"`
	Fields      []tasks.Field   `json:"fields"`
	Local       bool            `json:"local"`             // in Options.Registry
	Published   bool            `json:"published"`         // in the task catalogue
	Workers     []workerBody    `json:"workers,omitempty"` // serving a published type, most recently seen first
	Schema      json.RawMessage `json:"schema,omitempty"`  // the payload's JSON Schema
}

// workerBody is a worker serving a published type.
type workerBody struct {
	ID       string    `json:"id"`
	LastSeen time.Time `json:"last_seen"`
}

// taskTypes lists the registered task types, then the types only the task
// catalogue has, with their payload fields, schemas and, for published
// types, the workers serving them. When the catalogue cannot be read it
// lists the registered types and says so in catalog_error.
func (s *Server) taskTypes(w http.ResponseWriter, r *http.Request) {
	defs := s.reg.Definitions()
	ctx, cancel := s.redisCtx(r.Context())
	published, err := s.o.Catalog.Types(ctx)
	cancel()
	catalogErr := ""
	if err != nil {
		s.log.Warn("http dependency failed", zap.String("request_id", stateOf(r).id),
			zap.String("dependency", "task catalogue"), zap.Error(err))
		catalogErr = "task catalogue unavailable: only the registered types are listed"
	}
	byName := make(map[string]tasks.PublishedType, len(published))
	for _, p := range published {
		byName[p.Type] = p
	}
	out := make([]taskTypeBody, 0, len(defs)+len(published))
	for _, d := range defs {
		p, ok := byName[d.Type()]
		out = append(out, taskTypeBody{Type: d.Type(), Description: d.Description(), Queue: d.Queue(), Fields: d.Fields(),
			Local: true, Published: ok, Workers: workersOf(p.Workers), Schema: d.Schema()})
	}
	for _, p := range published {
		if _, ok := s.reg.Lookup(p.Type); ok {
			continue
		}
		out = append(out, taskTypeBody{Type: p.Type, Description: p.Description, Queue: p.Queue, Fields: p.Fields(),
			Published: true, Workers: workersOf(p.Workers), Schema: p.Schema})
	}
	for i := range out {
		if out[i].Fields == nil {
			out[i].Fields = []tasks.Field{}
		}
	}
	writeJSON(w, http.StatusOK, struct {
		TaskTypes    []taskTypeBody `json:"task_types"`
		CatalogError string         `json:"catalog_error,omitempty"`
	}{out, catalogErr})
}

// workersOf converts the workers of a published type; nil for none.
func workersOf(ws []tasks.WorkerSeen) []workerBody {
	if len(ws) == 0 {
		return nil
	}
	out := make([]workerBody, len(ws))
	for i, w := range ws {
		out[i] = workerBody{ID: w.ID, LastSeen: w.LastSeen}
	}
	return out
}
