package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/telemetry"
)

// Cache is what handlers need from the process's cache manager;
// *cachemgr.Manager satisfies it.
type Cache interface {
	Get(ctx context.Context, key string) (string, error)
	Set(ctx context.Context, key string, value any, ttl time.Duration) error
	Delete(ctx context.Context, keys ...string) (int64, error)
	DeletePattern(ctx context.Context, pattern string) (int64, error)
	GetOrCompute(ctx context.Context, key string, ttl time.Duration,
		compute func(context.Context) (string, error)) (string, bool, error)
}

// Enqueuer puts tasks on their queues; *asynq.Client satisfies it, and so
// does forgeqtest's recorder.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Deps are the process-wide collaborators handed to every handler. A
// handler reaches its program's own dependencies (a database pool, an HTTP
// client) through the closure or method value it is.
type Deps struct {
	// Cache is the process's cache manager, used synchronously.
	Cache Cache
	// Logger is the process logger (nil: no logging). In a handler
	// served by the worker (Definition.Handler) it carries the task's
	// trace_id and span_id when the task is traced, and request_id when
	// an HTTP request enqueued it (package telemetry).
	Logger *zap.Logger
	// Enqueuer is the process's asynq client, for follow-up tasks (nil
	// outside a worker: Type.Enqueue then fails with ErrNoEnqueuer).
	Enqueuer Enqueuer
	// Progress, when not nil, receives every progress report after it is
	// stored (forgeqtest records them).
	Progress func(Progress)
}

// HandleFunc handles one task with its decoded payload. The bytes it returns
// are stored as the task's result (nil: none). Return an error wrapping
// asynq.SkipRetry for failures that a retry cannot fix.
type HandleFunc[P any] func(ctx context.Context, deps Deps, payload P) ([]byte, error)

// Declared is a task type made by Define: a *Type[P] or the *Definition of
// one. Registries and workers take either.
type Declared interface {
	definition() *Definition
}

// Definition is one task type without its payload type: what registries,
// the worker, the CLI and the web process use. It is immutable and safe for
// concurrent use.
type Definition struct {
	typ         string
	description string
	previous    string // what the handler takes as the previous workflow stage's result ("": nothing)
	fields      []Field
	defaults    []asynq.Option
	payload     reflect.Type
	schema      func() (json.RawMessage, error) // the payload's JSON Schema, computed once (schema.go)
	validate    func(payload []byte) error
	process     func(ctx context.Context, deps Deps, payload []byte) ([]byte, error)
	limits      limits // rate limit and concurrency caps (limits.go)
}

func (d *Definition) definition() *Definition { return d }

// Type is a task type whose payload is P: the handle a program declares
// once (usually as a package-level variable) and uses to build and enqueue
// tasks with a typed payload, so that a wrong payload is a compile error.
// It is immutable and safe for concurrent use.
type Type[P any] struct {
	def *Definition
}

func (t *Type[P]) definition() *Definition {
	if t == nil {
		return nil
	}
	return t.def
}

// Definition returns the untyped definition of t.
func (t *Type[P]) Definition() *Definition { return t.def }

// Name returns the task type name, e.g. "data:process".
func (t *Type[P]) Name() string { return t.def.typ }

// NewTask validates p as the handler will decode it and builds a task of
// the type with the type's default options followed by opts. Errors wrap
// ErrInvalidPayload or ErrInvalidOption.
func (t *Type[P]) NewTask(p P, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, t.def.typ, err)
	}
	return t.def.NewTask(b, opts...)
}

// Enqueue builds the task of p as NewTask does and enqueues it with e:
// the worker's client (Deps.Enqueuer inside a handler, for follow-up
// tasks), an *asynq.Client, or a forgeqtest recorder. Errors wrap
// ErrInvalidPayload, ErrInvalidOption or ErrNoEnqueuer, or are e's
// (asynq.ErrDuplicateTask, asynq.ErrTaskIDConflict, a Redis error).
func (t *Type[P]) Enqueue(ctx context.Context, e Enqueuer, p P, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: enqueue %s", ErrNoEnqueuer, t.def.typ)
	}
	task, err := t.NewTask(p, opts...)
	if err != nil {
		return nil, err
	}
	return e.EnqueueContext(ctx, task)
}

// TakesPrevious returns a copy of t declaring that its handler, as a
// workflow step, reads the result of the stage before it (workflow.Previous
// or workflow.Results); what describes that result, e.g. "the report's
// rows (JSON array)". It is published to the task catalogue and shown by
// the enqueue command's --list. Use it where t is declared:
//
//	var Summarize = tasks.Define("report:summarize", "...", summarize).
//		TakesPrevious("the row counts of the group's members")
func (t *Type[P]) TakesPrevious(what string) *Type[P] {
	d := *t.def
	d.previous = what
	return &Type[P]{def: &d}
}

// Handle runs the type's handler on p directly, without decoding, asynq or
// a result writer (tests; forgeqtest.Run goes through the payload's JSON
// as a worker does).
func (t *Type[P]) Handle(ctx context.Context, deps Deps, p P) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, t.def.typ, err)
	}
	return t.def.Process(ctx, deps, b)
}

// ErrNoEnqueuer is returned by Type.Enqueue when given no Enqueuer.
var ErrNoEnqueuer = errors.New("tasks: no enqueuer")

// Define declares a task type named typ whose payload is the JSON form of P
// (a struct). defaults are the asynq options every task of the type gets
// (queue, retries, timeout, retention); NewTask's options override them.
// Payloads decode strictly (see the package doc); a P with a
// Validate() error method (Validator) is checked by it too.
//
// Define panics when P is not a struct or typ is empty: both are
// programming errors that the first test run shows.
func Define[P any](typ, description string, handle HandleFunc[P], defaults ...asynq.Option) *Type[P] {
	pt := reflect.TypeFor[P]()
	if pt.Kind() != reflect.Struct {
		panic("tasks: Define: payload type of " + typ + " is not a struct") // programming error
	}
	if typ == "" {
		panic("tasks: Define: empty task type name") // programming error
	}
	d := &Definition{
		typ:         typ,
		description: description,
		fields:      fieldsOf(pt),
		defaults:    defaults,
		payload:     pt,
		validate: func(payload []byte) error {
			_, err := decodeStrict[P](typ, payload)
			return err
		},
		process: func(ctx context.Context, deps Deps, payload []byte) ([]byte, error) {
			p, err := decodeStrict[P](typ, payload)
			if err != nil {
				// It will never parse: archive it instead of retrying.
				return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
			}
			return handle(ctx, deps, p)
		},
	}
	d.schema = sync.OnceValues(func() (json.RawMessage, error) { return reflectSchema(typ, description, pt) })
	return &Type[P]{def: d}
}

// Process decodes payload strictly and runs the handler on it, returning
// the handler's result and error; a payload that does not decode fails
// with an error wrapping ErrInvalidPayload and asynq.SkipRetry. It is what
// the worker's handler runs, without asynq: forgeqtest calls it.
func (d *Definition) Process(ctx context.Context, deps Deps, payload []byte) ([]byte, error) {
	return d.process(ctx, deps, payload)
}

// Type returns the task type name, e.g. "data:process".
func (d *Definition) Type() string { return d.typ }

// TakesPrevious describes what the type's handler reads as the result of
// the workflow stage before it (package workflow's Previous); empty when
// it reads none. The enqueue command's --list shows it.
func (d *Definition) TakesPrevious() string { return d.previous }

// Description returns the one-line description.
func (d *Definition) Description() string { return d.description }

// Fields describes the payload's fields.
func (d *Definition) Fields() []Field { return append([]Field(nil), d.fields...) }

// Defaults returns the asynq options every task of the type gets.
func (d *Definition) Defaults() []asynq.Option { return append([]asynq.Option(nil), d.defaults...) }

// MaxRetry returns the type's default retry limit, and false when it sets
// none (asynq's default of 25 then applies, or WORKER_MAX_RETRY for
// scheduled tasks).
func (d *Definition) MaxRetry() (int, bool) {
	n, ok := optionValue[int](d.defaults, asynq.MaxRetryOpt)
	return n, ok
}

// Timeout returns the type's default timeout per attempt, and false when it
// sets none (asynq's default of 30 minutes then applies).
func (d *Definition) Timeout() (time.Duration, bool) {
	return optionValue[time.Duration](d.defaults, asynq.TimeoutOpt)
}

// Retention returns how long a completed task of the type is kept by
// default, and false when the type sets none.
func (d *Definition) Retention() (time.Duration, bool) {
	return optionValue[time.Duration](d.defaults, asynq.RetentionOpt)
}

// optionValue returns the value of the last option of type t in opts.
func optionValue[V any](opts []asynq.Option, t asynq.OptionType) (V, bool) {
	var (
		v  V
		ok bool
	)
	for _, o := range opts {
		if o.Type() == t {
			v, ok = o.Value().(V)
		}
	}
	return v, ok
}

// Queue returns the queue tasks of the type go to by default.
func (d *Definition) Queue() string {
	queue := "default"
	for _, o := range d.defaults {
		if o.Type() == asynq.QueueOpt {
			queue, _ = o.Value().(string)
		}
	}
	return queue
}

// Validate checks payload as the handler will decode it. Errors wrap
// ErrInvalidPayload and say what is wrong.
func (d *Definition) Validate(payload []byte) error { return d.validate(payload) }

// NewTask validates payload and builds a task of the type with the type's
// default options followed by opts. Errors wrap ErrInvalidPayload, or
// ErrInvalidOption and an *OptionError for an option CheckOption refuses.
func (d *Definition) NewTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
	if err := d.validate(payload); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if len(bytes.TrimSpace(payload)) == 0 {
		buf.WriteString("{}")
	} else if err := json.Compact(&buf, payload); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, d.typ, err)
	}
	all := append(d.Defaults(), opts...)
	if err := checkOptions(d.typ, all, time.Now()); err != nil {
		return nil, err
	}
	// A header map of its own, which Client.EnqueueContext fills with
	// the trace context and request id.
	return asynq.NewTaskWithHeaders(d.typ, buf.Bytes(), map[string]string{}, all...), nil
}

// Handler returns the asynq handler of the type, bound to deps: Process,
// then the result written as the task's result.
func (d *Definition) Handler(deps Deps) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		deps := deps
		if deps.Logger != nil {
			// The handler's own log lines carry the task's trace and
			// request id, as the worker's "task done" line does.
			if f := telemetry.LogFields(ctx); len(f) > 0 {
				deps.Logger = deps.Logger.With(f...)
			}
		}
		result, err := d.process(ctx, deps, t.Payload())
		if err != nil {
			return err
		}
		taskctx.SetResult(ctx, result)
		if result != nil {
			if w := t.ResultWriter(); w != nil {
				if _, err := w.Write(result); err != nil {
					return fmt.Errorf("%s: write result: %w", d.typ, err)
				}
			}
		}
		return nil
	})
}

// ErrUnknownType is returned for a task type no Registry entry has.
var ErrUnknownType = errors.New("tasks: unknown task type")
