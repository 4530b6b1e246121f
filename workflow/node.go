package workflow

import (
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// Node is one stage of a workflow: a task (Task, Raw), a Chain of nodes
// run one after another, or a Group of nodes run in parallel with an
// optional callback. Nodes are values describing the work; nothing runs
// until Client.Submit.
type Node interface {
	node()
}

// TaskNode is a workflow step that runs one task; see Task and Raw.
type TaskNode struct {
	typ     string
	payload []byte
	opts    []asynq.Option
	err     error // from building the payload; reported by Submit naming the step
}

func (*TaskNode) node() {}

// Type returns the node's task type name.
func (n *TaskNode) Type() string { return n.typ }

// Task returns a step running a task of type t with payload p and opts
// after t's default options. The payload and options are checked by
// Client.Submit, as every enqueue checks them (tasks.Definition.NewTask);
// the options a step may carry are Queue, MaxRetry, Timeout, Deadline and
// Retention (forgeq sets each step's task id, and a step runs when its
// turn comes, so TaskID, Unique, ProcessAt and ProcessIn are refused).
func Task[P any](t *tasks.Type[P], p P, opts ...asynq.Option) *TaskNode {
	n := &TaskNode{typ: t.Name(), opts: opts}
	n.payload, n.err = json.Marshal(p)
	if n.err != nil {
		n.err = fmt.Errorf("%w: %s: %v", tasks.ErrInvalidPayload, t.Name(), n.err)
	}
	return n
}

// Raw returns a step running a task of the type named typ with the JSON
// payload (nil: {}), for types this program does not declare: Submit
// checks it against the Client's Types (the task catalogue included).
func Raw(typ string, payload []byte, opts ...asynq.Option) *TaskNode {
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	return &TaskNode{typ: typ, payload: payload, opts: opts}
}

// ChainNode runs its steps one after another; see Chain.
type ChainNode struct {
	steps []Node
}

func (*ChainNode) node() {}

// Chain returns a node running steps one after another: each starts when
// the one before it succeeded and can read that one's result (Previous).
// A step that fails, once its retries are used up, stops the chain: the
// steps after it never run.
func Chain(steps ...Node) *ChainNode { return &ChainNode{steps: steps} }

// Policy says when a group's callback runs.
type Policy int

const (
	// AllSucceeded runs the callback only when every member succeeded; a
	// failed member fails the group once all members have finished.
	AllSucceeded Policy = iota
	// Always runs the callback once every member has finished, failed or
	// not; the callback lists the failures through Results.
	Always
)

// String returns "all_succeeded" or "always", the names of the JSON form.
func (p Policy) String() string {
	switch p {
	case AllSucceeded:
		return "all_succeeded"
	case Always:
		return "always"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// GroupNode runs its members in parallel, then its callback; see Group.
type GroupNode struct {
	members  []Node
	callback Node
	policy   Policy
}

func (*GroupNode) node() {}

// Group returns a node running members in parallel. It finishes when
// every member has finished; with a callback (Then) it finishes when the
// callback does.
func Group(members ...Node) *GroupNode { return &GroupNode{members: members} }

// Then returns a copy of g whose callback runs exactly once after all of
// g's members have finished, as policy says; the callback reads the
// members' results and failures with Results.
func (g *GroupNode) Then(callback Node, policy Policy) *GroupNode {
	c := *g
	c.callback, c.policy = callback, policy
	return &c
}
