package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
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

// Deps are the process-wide collaborators handed to every handler.
type Deps struct {
	Cache  Cache
	Logger *zap.Logger // nil: no logging
}

// HandleFunc handles one task with its decoded payload. The bytes it returns
// are stored as the task's result (nil: none). Return an error wrapping
// asynq.SkipRetry for failures that a retry cannot fix.
type HandleFunc[P any] func(ctx context.Context, deps Deps, payload P) ([]byte, error)

// Definition is one task type. Build it with Define; it is immutable and
// safe for concurrent use.
type Definition struct {
	typ         string
	description string
	fields      []Field
	defaults    []asynq.Option
	validate    func(payload []byte) error
	handler     func(Deps) asynq.Handler
}

// Define declares a task type named typ whose payload is the JSON form of P
// (a struct). defaults are the asynq options every task of the type gets
// (queue, retries, timeout); NewTask's options override them.
func Define[P any](typ, description string, handle HandleFunc[P], defaults ...asynq.Option) *Definition {
	if reflect.TypeFor[P]().Kind() != reflect.Struct {
		panic("tasks: Define: payload type of " + typ + " is not a struct") // programming error
	}
	return &Definition{
		typ:         typ,
		description: description,
		fields:      fieldsOf(reflect.TypeFor[P]()),
		defaults:    defaults,
		validate: func(payload []byte) error {
			_, err := decodeStrict[P](typ, payload)
			return err
		},
		handler: func(deps Deps) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				p, err := decodeStrict[P](typ, t.Payload())
				if err != nil {
					// It will never parse: archive it instead of retrying.
					return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
				}
				result, err := handle(ctx, deps, p)
				if err != nil {
					return err
				}
				if result != nil {
					if w := t.ResultWriter(); w != nil {
						if _, err := w.Write(result); err != nil {
							return fmt.Errorf("%s: write result: %w", typ, err)
						}
					}
				}
				return nil
			})
		},
	}
}

// Type returns the task type name, e.g. "data:process".
func (d *Definition) Type() string { return d.typ }

// Description returns the one-line description.
func (d *Definition) Description() string { return d.description }

// Fields describes the payload's fields.
func (d *Definition) Fields() []Field { return append([]Field(nil), d.fields...) }

// Defaults returns the asynq options every task of the type gets.
func (d *Definition) Defaults() []asynq.Option { return append([]asynq.Option(nil), d.defaults...) }

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
// ErrInvalidOption for a timeout under a second.
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
	if err := checkOptions(d.typ, all); err != nil {
		return nil, err
	}
	return asynq.NewTask(d.typ, buf.Bytes(), all...), nil
}

// ErrInvalidOption is wrapped by the error of an option asynq would not
// honour as given.
var ErrInvalidOption = errors.New("tasks: invalid option")

// checkOptions refuses options that asynq would silently change: it keeps
// a task's timeout in whole seconds, so a timeout under a second becomes 0,
// which asynq reads as "none given" and replaces with its 30-minute
// default.
func checkOptions(typ string, opts []asynq.Option) error {
	for _, o := range opts {
		if o.Type() != asynq.TimeoutOpt {
			continue
		}
		if t, _ := o.Value().(time.Duration); t < time.Second {
			return fmt.Errorf("%w: %s: timeout %v is under asynq's resolution of 1s (asynq would run the task with its 30m default)", ErrInvalidOption, typ, t)
		}
	}
	return nil
}

// Handler returns the asynq handler of the type, bound to deps.
func (d *Definition) Handler(deps Deps) asynq.Handler { return d.handler(deps) }

// newTyped is what the typed New...Task constructors share.
func newTyped(d *Definition, payload any, opts []asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, d.typ, err)
	}
	return d.NewTask(b, opts...)
}

// ErrUnknownType is returned for a task type no Registry entry has.
var ErrUnknownType = errors.New("tasks: unknown task type")
