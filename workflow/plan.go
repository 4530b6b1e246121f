package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// Limits of one workflow, checked by Submit before anything is written.
const (
	// MaxTasks is the most task steps (members and callbacks included)
	// one workflow may hold.
	MaxTasks = 200_000
	// MaxDepth is the deepest nesting of chains and groups.
	MaxDepth = 16
	// MaxBytes is the most payload bytes all the steps of one workflow
	// may carry together (each payload is also held to
	// tasks.MaxPayloadSize).
	MaxBytes = 64 << 20
	// MaxIDLen is the longest workflow id.
	MaxIDLen = 64
)

// rootPath is the path of the workflow's root, a chain; the paths of its
// steps are "0", "1", ...; a group's members are "<group>.m0", ...; its
// callback "<group>.cb"; a chain's steps "<chain>.0", ...
const rootPath = "."

// Types finds the task type of a step by name: a program's own types
// (RegistryTypes) or those of the task catalogue too (CatalogTypes).
type Types interface {
	// Lookup returns the builder of typ; an unknown type's error wraps
	// tasks.ErrUnknownType.
	Lookup(ctx context.Context, typ string) (Builder, error)
}

// Builder builds the tasks of one type; *tasks.Definition and
// tasks.PublishedType satisfy it. Its NewTask is the one validation
// every entry point (Go, CLI, HTTP) applies to a payload and options.
type Builder interface {
	Defaults() []asynq.Option
	NewTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error)
}

// RegistryTypes returns the types of reg.
func RegistryTypes(reg *tasks.Registry) Types { return registryTypes{reg} }

type registryTypes struct{ reg *tasks.Registry }

func (r registryTypes) Lookup(_ context.Context, typ string) (Builder, error) {
	d, ok := r.reg.Lookup(typ)
	if !ok {
		msg := fmt.Sprintf("%q (known types: %s)", typ, strings.Join(r.reg.Types(), ", "))
		if s := tasks.SuggestType(typ, r.reg.Types()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return nil, fmt.Errorf("%w %s", tasks.ErrUnknownType, msg)
	}
	return d, nil
}

// CatalogTypes returns the types of reg (which may be nil), then those
// the workers published to cat, the task catalogue: what the enqueue
// command and the web process check a workflow against.
func CatalogTypes(reg *tasks.Registry, cat *tasks.Catalog) Types {
	return catalogTypes{reg, cat}
}

type catalogTypes struct {
	reg *tasks.Registry
	cat *tasks.Catalog
}

func (c catalogTypes) Lookup(ctx context.Context, typ string) (Builder, error) {
	if c.reg != nil {
		if d, ok := c.reg.Lookup(typ); ok {
			return d, nil
		}
	}
	p, err := c.cat.Lookup(ctx, typ)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// StepError is a step that Submit refused: Step is its path ("1.m3.0";
// see the package doc), Type its task type when it is a task step.
type StepError struct {
	Step string
	Type string
	Err  error
}

func (e *StepError) Error() string {
	msg := strings.TrimPrefix(e.Err.Error(), "tasks: ")
	if e.Step == rootPath || e.Step == "" {
		return "workflow: " + msg
	}
	where := "step " + e.Step
	if e.Type != "" {
		where += " (" + e.Type + ")"
	}
	return "workflow: " + where + ": " + msg
}

func (e *StepError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// taskSpec is what a step's task is built from when its turn comes, by
// whichever process finishes the step before it: stored in the
// workflow's record at submission.
type taskSpec struct {
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Queue     string          `json:"queue"`
	MaxRetry  *int            `json:"max_retry,omitempty"`
	Timeout   time.Duration   `json:"timeout,omitempty"`
	Deadline  int64           `json:"deadline,omitempty"` // Unix seconds
	Retention time.Duration   `json:"retention,omitempty"`
}

// task builds the asynq task of the step at path of workflow id.
func (s taskSpec) task(id, path string) *asynq.Task {
	opts := []asynq.Option{asynq.Queue(s.Queue), asynq.TaskID(TaskID(id, path))}
	if s.MaxRetry != nil {
		opts = append(opts, asynq.MaxRetry(*s.MaxRetry))
	}
	if s.Timeout > 0 {
		opts = append(opts, asynq.Timeout(s.Timeout))
	}
	if s.Deadline > 0 {
		opts = append(opts, asynq.Deadline(time.Unix(s.Deadline, 0)))
	}
	if s.Retention > 0 {
		opts = append(opts, asynq.Retention(s.Retention))
	}
	// A header map of its own, for the trace context (tasks.Client).
	return asynq.NewTaskWithHeaders(s.Type, s.Payload, map[string]string{}, opts...)
}

// plan is a checked workflow, flattened: the shape of every composite
// node and the task of every task node, by path.
type plan struct {
	shapes map[string]string   // composite path -> "c:<steps>" | "g:<members>:<callback 0|1>:<policy a|s>"; a task path has none
	specs  map[string]taskSpec // task paths
	order  []string            // task paths, in the order of the tree
	bytes  int
}

// compile checks root against types and flattens it. Errors are
// *StepErrors naming the step, or a failure to look a type up.
func compile(ctx context.Context, root Node, types Types, now time.Time) (*plan, error) {
	if root == nil {
		return nil, &StepError{Step: rootPath, Err: errors.New("no steps")}
	}
	c := &compiler{
		ctx: ctx, types: types, now: now,
		builders: map[string]Builder{}, bad: map[string]error{},
		onPath: map[Node]bool{},
		p:      &plan{shapes: map[string]string{}, specs: map[string]taskSpec{}},
	}
	steps := []Node{root}
	if ch, ok := root.(*ChainNode); ok {
		steps = ch.steps
	}
	if err := c.chain(rootPath, steps, 0); err != nil {
		return nil, err
	}
	return c.p, nil
}

type compiler struct {
	ctx      context.Context
	types    Types
	now      time.Time
	builders map[string]Builder // looked-up types
	bad      map[string]error   // types whose lookup failed
	onPath   map[Node]bool      // composite nodes being compiled: a node inside itself is a cycle
	p        *plan
}

func child(parent, seg string) string {
	if parent == rootPath {
		return seg
	}
	return parent + "." + seg
}

func (c *compiler) enter(path string, n Node, depth int) error {
	if depth > MaxDepth {
		return &StepError{Step: path, Err: fmt.Errorf("nested %d deep; the most is %d (MaxDepth)", depth, MaxDepth)}
	}
	if c.onPath[n] {
		return &StepError{Step: path, Err: errors.New("a cycle: this chain or group contains itself")}
	}
	c.onPath[n] = true
	return nil
}

func (c *compiler) chain(path string, steps []Node, depth int) error {
	if len(steps) == 0 {
		return &StepError{Step: path, Err: errors.New("empty chain: it needs at least one step")}
	}
	c.p.shapes[path] = "c:" + strconv.Itoa(len(steps))
	for i, s := range steps {
		if err := c.node(child(path, strconv.Itoa(i)), s, depth); err != nil {
			return err
		}
	}
	return nil
}

func (c *compiler) node(path string, n Node, depth int) error {
	switch n := n.(type) {
	case *TaskNode:
		if n == nil {
			return &StepError{Step: path, Err: errors.New("nil step")}
		}
		return c.task(path, n)
	case *ChainNode:
		if n == nil {
			return &StepError{Step: path, Err: errors.New("nil chain")}
		}
		if err := c.enter(path, n, depth+1); err != nil {
			return err
		}
		defer delete(c.onPath, n)
		return c.chain(path, n.steps, depth+1)
	case *GroupNode:
		if n == nil {
			return &StepError{Step: path, Err: errors.New("nil group")}
		}
		if err := c.enter(path, n, depth+1); err != nil {
			return err
		}
		defer delete(c.onPath, n)
		return c.group(path, n, depth+1)
	case nil:
		return &StepError{Step: path, Err: errors.New("nil step")}
	default:
		return &StepError{Step: path, Err: fmt.Errorf("unknown node %T", n)}
	}
}

func (c *compiler) group(path string, g *GroupNode, depth int) error {
	if len(g.members) == 0 {
		return &StepError{Step: path, Err: errors.New("empty group: it needs at least one member")}
	}
	cb, pol := "0", "s"
	if g.callback != nil {
		cb = "1"
	}
	switch g.policy {
	case AllSucceeded:
	case Always:
		if g.callback == nil {
			return &StepError{Step: path, Err: errors.New("policy always without a callback")}
		}
		pol = "a"
	default:
		return &StepError{Step: path, Err: fmt.Errorf("unknown callback policy %d", int(g.policy))}
	}
	c.p.shapes[path] = "g:" + strconv.Itoa(len(g.members)) + ":" + cb + ":" + pol
	for i, m := range g.members {
		if err := c.node(child(path, "m"+strconv.Itoa(i)), m, depth); err != nil {
			return err
		}
	}
	if g.callback != nil {
		return c.node(child(path, "cb"), g.callback, depth)
	}
	return nil
}

// Options a step may not carry, with why.
var refusedOptions = map[asynq.OptionType]string{
	asynq.TaskIDOpt:    "forgeq sets the task id of every step",
	asynq.UniqueOpt:    "a step runs once per workflow; give the workflow an id instead",
	asynq.ProcessAtOpt: "a step runs when the step before it finishes",
	asynq.ProcessInOpt: "a step runs when the step before it finishes",
	asynq.GroupOpt:     "task groups (aggregation) do not mix with workflows",
}

func (c *compiler) task(path string, n *TaskNode) error {
	fail := func(err error) error { return &StepError{Step: path, Type: n.typ, Err: err} }
	if len(c.p.order) >= MaxTasks {
		return fail(fmt.Errorf("more than %d task steps (MaxTasks)", MaxTasks))
	}
	if n.err != nil {
		return fail(n.err)
	}
	if len(TaskID(strings.Repeat("x", MaxIDLen), path)) > tasks.MaxNameLen {
		return fail(fmt.Errorf("step path %q too long for a task id; nest less", path))
	}
	for _, o := range n.opts {
		if why, ok := refusedOptions[o.Type()]; ok {
			return fail(fmt.Errorf("%w: option %s is not allowed in a workflow step: %s", tasks.ErrInvalidOption, o.String(), why))
		}
	}
	b, err := c.builder(n.typ)
	switch {
	case errors.Is(err, tasks.ErrUnknownType):
		return fail(err)
	case err != nil:
		// The catalogue could not be read: not the workflow's fault.
		return fmt.Errorf("workflow: step %s (%s): look up its type: %w", path, n.typ, err)
	}
	if _, err := b.NewTask(n.payload, n.opts...); err != nil {
		return fail(err)
	}
	c.p.bytes += len(n.payload)
	if c.p.bytes > MaxBytes {
		return fail(fmt.Errorf("the workflow's payloads pass %d bytes (MaxBytes)", MaxBytes))
	}
	s := taskSpec{Type: n.typ, Payload: n.payload, Queue: "default"}
	for _, o := range append(b.Defaults(), n.opts...) {
		switch o.Type() {
		case asynq.QueueOpt:
			s.Queue, _ = o.Value().(string)
		case asynq.MaxRetryOpt:
			v, _ := o.Value().(int)
			s.MaxRetry = &v
		case asynq.TimeoutOpt:
			s.Timeout, _ = o.Value().(time.Duration)
		case asynq.DeadlineOpt:
			if t, ok := o.Value().(time.Time); ok {
				s.Deadline = t.Unix()
			}
		case asynq.RetentionOpt:
			s.Retention, _ = o.Value().(time.Duration)
		}
	}
	c.p.specs[path] = s
	c.p.order = append(c.p.order, path)
	return nil
}

func (c *compiler) builder(typ string) (Builder, error) {
	if b, ok := c.builders[typ]; ok {
		return b, nil
	}
	if err, ok := c.bad[typ]; ok {
		return nil, err
	}
	b, err := c.types.Lookup(c.ctx, typ)
	if err != nil {
		c.bad[typ] = err
		return nil, err
	}
	c.builders[typ] = b
	return b, nil
}
