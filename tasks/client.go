package tasks

import (
	"context"
	"sync"
	"unsafe"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/telemetry"
)

var _ Enqueuer = (*Client)(nil)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Events, when not nil, receives an "enqueued" event for every task
	// the client enqueues (package events). nil: none.
	Events *events.Publisher
}

// Client is the Enqueuer every forgeq entry point uses (the worker's
// Deps.Enqueuer, the web process, the enqueue command, the scheduler and
// workflows): an asynq client that also
//   - enqueues each task in a span of its own (package telemetry; a no-op
//     when tracing is off),
//   - writes the caller's trace context (W3C traceparent, tracestate,
//     baggage) and request id into the task's headers, so that the
//     handler's span continues the trace and its log line names the
//     request,
//   - publishes an "enqueued" event to the queue's event stream when
//     ClientOptions.Events is set.
//
// The headers can be written only into a task built with a header map:
// every task built by this package (Type.NewTask, Definition.NewTask,
// PublishedType.NewTask) has one, and so has one built with
// asynq.NewTaskWithHeaders and a non-nil map. A task built with
// asynq.NewTask is enqueued in its span but carries no context.
//
// EnqueueContext owns the headers traceparent, tracestate, baggage and
// x-request-id of the task it is given: it replaces those an earlier
// enqueue of the same task value wrote (and any the caller set) with the
// current ctx's, or removes them when ctx has none. The task's other
// headers are kept.
//
// A Client is safe for concurrent use, and so is enqueuing one task value
// from several goroutines at once: the enqueues of one task are serialized
// while its header map is written and encoded (a lock chosen by the task's
// address, among a fixed set). A caller must not write a task's headers
// itself while it is being enqueued. A Client does not own the asynq
// client: closing it is the caller's business, as before.
type Client struct {
	c *asynq.Client
	o ClientOptions
}

// NewClient returns a Client enqueueing with c.
func NewClient(c *asynq.Client, o ClientOptions) *Client {
	return &Client{c: c, o: o}
}

// Asynq returns the asynq client c enqueues with.
func (c *Client) Asynq() *asynq.Client { return c.c }

// EnqueueContext enqueues task as asynq.Client.EnqueueContext does (the
// same options, errors and TaskInfo), with the span, headers and event
// described on Client.
func (c *Client) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	ctx, span := telemetry.StartEnqueue(ctx, task.Type())
	defer span.End()
	info, err := c.enqueueLocked(ctx, task, opts...)
	if err != nil {
		endEnqueueSpan(span, err)
		return nil, err
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.destination.name", info.Queue),
			attribute.String("messaging.message.id", info.ID))
	}
	c.publishEnqueued(ctx, info.Queue, info.ID, info.Type)
	return info, nil
}

// headerLocks serialize the enqueues of one task value: asynq hands out the
// task's own header map (Task.Headers), which EnqueueContext writes and
// asynq reads while encoding the message. A lock is chosen by the task's
// address, so the table stays the same size however many tasks there are.
var headerLocks [64]sync.Mutex

// headerLock returns the lock of task's header map.
func headerLock(task *asynq.Task) *sync.Mutex {
	a := uintptr(unsafe.Pointer(task))
	// Tasks are at least 8-byte aligned: drop the bits that never vary,
	// and fold the higher ones in.
	h := (a >> 4) ^ (a >> 10)
	return &headerLocks[h%uintptr(len(headerLocks))]
}

// ownedHeaders are the task headers EnqueueContext writes: each enqueue
// clears them first, so that a task value enqueued again does not carry
// the trace context or request id of an earlier enqueue.
var ownedHeaders = [...]string{"traceparent", "tracestate", "baggage", telemetry.HeaderRequestID}

// enqueueLocked writes ctx's trace context and request id into task's
// headers and enqueues it, holding task's header lock throughout.
func (c *Client) enqueueLocked(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	h := task.Headers()
	if h == nil {
		return c.c.EnqueueContext(ctx, task, opts...)
	}
	mu := headerLock(task)
	mu.Lock()
	defer mu.Unlock()
	for _, k := range ownedHeaders {
		delete(h, k)
	}
	telemetry.Inject(ctx, h)
	return c.c.EnqueueContext(ctx, task, opts...)
}

// EnqueueBatch is the package's EnqueueBatch (one span for the batch, the
// caller's trace context in every task) followed by an "enqueued" event for
// each new task when ClientOptions.Events is set. rdb is the Redis client
// of c's asynq client.
func (c *Client) EnqueueBatch(ctx context.Context, rdb redis.UniversalClient, items []BatchItem) ([]BatchResult, error) {
	res, err := EnqueueBatch(ctx, rdb, items)
	if err != nil {
		return res, err
	}
	for _, r := range res {
		if r.Deduplicated == "" {
			c.publishEnqueued(ctx, r.Queue, r.ID, r.Type)
		}
	}
	return res, nil
}

// publishEnqueued publishes the enqueued event of one task.
func (c *Client) publishEnqueued(ctx context.Context, queue, id, typ string) {
	if c.o.Events == nil {
		return
	}
	e := events.Event{Kind: events.Enqueued, Queue: queue, TaskID: id, Type: typ}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.TraceID = sc.TraceID().String()
	}
	c.o.Events.Publish(e)
}

// endEnqueueSpan marks span failed with err.
func endEnqueueSpan(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}
