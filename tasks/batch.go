package tasks

import (
	"context"
	"crypto/md5"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"

	"github.com/forgeq/forgeq/telemetry"
)

//go:embed batch.lua
var batchSource string

var batchScript = redis.NewScript(batchSource)

// allQueues is asynq's set of queue names (base.AllQueues).
const allQueues = "asynq:queues"

// BatchItem is one task of EnqueueBatch: what asynq.NewTask takes, and an
// optional dedup key. Build it with Type.Item or Definition.Item, which
// validate the payload and add the type's default options.
type BatchItem struct {
	// Type is the task type name.
	Type string
	// Payload is the task's payload.
	Payload []byte
	// Options are the asynq options of the task, applied as asynq.Client
	// applies them (queue, id, delay or process-at, max retry, timeout,
	// deadline, unique, retention; a group is refused).
	Options []asynq.Option
	// Dedup, when not nil, deduplicates the task by its key (see Dedup).
	// It cannot be combined with asynq.Unique.
	Dedup *Dedup
}

// BatchResult is what became of one BatchItem.
type BatchResult struct {
	// ID, Queue and Type name the task: the new one, or for a
	// deduplicated item the task that holds its dedup key.
	ID, Queue, Type string
	// State is the task's state after the enqueue: pending or scheduled
	// for a new task; for a deduplicated one, the held task's state.
	State asynq.TaskState
	// ProcessAt is when a scheduled task runs (zero when pending).
	ProcessAt time.Time
	// Deduplicated is the dedup mode applied when the item found its key
	// held by a waiting task: DedupKeep (nothing changed), DedupReplace
	// (the held task's message replaced) or DedupDebounce (replaced and
	// its run time pushed back). Empty when the item made a new task.
	Deduplicated DedupMode
}

// ErrDedupConflict is wrapped by the BatchError of an item whose dedup key
// is held by a task it cannot replace: one of another type, or one that is
// running or waiting to retry (replace and debounce change only a pending
// or scheduled task).
var ErrDedupConflict = errors.New("tasks: dedup key held by a task that cannot be replaced")

// BatchError is the error of EnqueueBatch when an item conflicts: it
// names the item, and wraps asynq.ErrTaskIDConflict (its id is taken),
// asynq.ErrDuplicateTask (its uniqueness lock is held) or
// ErrDedupConflict. Nothing of the item's hash slot was enqueued.
type BatchError struct {
	// Index is the item's index in the batch.
	Index int
	// ID and Queue are the item's task id and queue.
	ID, Queue string
	// Err is the conflict.
	Err error
	// Holder is the id of the task that holds the id, lock or dedup key,
	// and HolderState its state (or, for a dedup key held by another
	// type, that type), when known.
	Holder, HolderState string
}

// Error describes the conflict.
func (e *BatchError) Error() string {
	var what string
	switch {
	case errors.Is(e.Err, asynq.ErrTaskIDConflict):
		what = fmt.Sprintf("task id %q: queue %q already has a task with this id", e.ID, e.Queue)
		if e.HolderState != "" {
			what += " (" + e.HolderState + ")"
		}
	case errors.Is(e.Err, asynq.ErrDuplicateTask):
		what = fmt.Sprintf("unique task: queue %q already has a task of the same type and payload (%s) holding its uniqueness lock", e.Queue, e.Holder)
	case e.HolderState != "":
		what = fmt.Sprintf("dedup key held by task %s (%s)", e.Holder, e.HolderState)
	default:
		what = e.Err.Error()
	}
	return fmt.Sprintf("tasks: batch item %d: %s: %v", e.Index, what, e.Err)
}

// Unwrap returns the conflict.
func (e *BatchError) Unwrap() error { return e.Err }

// prepared is one item ready for the script.
type prepared struct {
	index    int
	r        resolved
	msg      []byte // the task message
	score    int64  // unix seconds; 0: pending
	ttl      int64  // uniqueness lock TTL in seconds
	dedup    *Dedup
	maxDelay int64 // debounce: the maximum delay from the key's first enqueue, in seconds
}

// EnqueueBatch enqueues items on rdb, writing asynq's own layout so that
// asynq workers run the tasks unchanged, with one Lua script per hash
// slot: one for the whole batch on a single node, one per queue on a
// cluster (asynq's keys carry their queue as hash tag). Each script is all
// or nothing: when an item conflicts (its id is taken, its uniqueness
// lock held, its dedup key held by a task it cannot replace), the script
// writes nothing and the error is a *BatchError naming the first such
// item. On a cluster the other queues' scripts may have run; results then
// holds theirs (a nil error means every item is in).
//
// Items are checked first (CheckOption on every option, CheckDedup): a
// bad one fails the whole batch with an error wrapping ErrInvalidOption
// before anything is sent. A task id used twice in one batch, or asynq.
// Unique with a Dedup, is refused the same way.
//
// Items with a Dedup (see Dedup) whose key is held by a pending or
// scheduled task are deduplicated instead of enqueued: the result names
// the held task and says what was done. The check and the write are one
// script, so concurrent producers see each key held by exactly one task.
//
// The batch is enqueued in one producer span (package telemetry), whose
// context and the caller's request id every task carries. It is named
// "<type> publish" when all items have the same type, else "batch
// publish"; for a batch of one item it has the task's queue and id, as
// the span of Client.EnqueueContext has, and for more the number of items.
//
// It is safe for concurrent use.
func EnqueueBatch(ctx context.Context, rdb redis.UniversalClient, items []BatchItem) (results []BatchResult, err error) {
	ctx, span := telemetry.StartEnqueue(ctx, batchSpanType(items))
	defer func() {
		if err != nil {
			endEnqueueSpan(span, err)
		} else if len(items) == 1 && len(results) == 1 && span.IsRecording() {
			// A batch of one is an enqueue like Client.EnqueueContext's.
			span.SetAttributes(attribute.String("messaging.destination.name", results[0].Queue),
				attribute.String("messaging.message.id", results[0].ID))
		}
		span.End()
	}()
	if span.IsRecording() && len(items) != 1 {
		span.SetAttributes(attribute.Int("messaging.batch.message_count", len(items)))
	}
	// Every task carries the batch span's trace context and the caller's
	// request id (package telemetry).
	carried := map[string]string{}
	telemetry.Inject(ctx, carried)
	now := time.Now()
	preps := make([]prepared, len(items))
	ids := make(map[string]int, len(items))
	for i, it := range items {
		p, err := prepare(it, carried, now)
		if err != nil {
			return nil, fmt.Errorf("tasks: batch item %d: %w", i, err)
		}
		p.index = i
		key := p.r.queue + "\x00" + p.r.id
		if j, dup := ids[key]; dup {
			return nil, fmt.Errorf("%w: tasks: batch item %d: id %q: already used by item %d", ErrInvalidOption, i, p.r.id, j)
		}
		ids[key] = i
		preps[i] = p
	}
	results = make([]BatchResult, len(items))
	if len(items) == 0 {
		return results, nil
	}
	// Register the queues as asynq.Client does (asynq:queues is in a slot
	// of its own, so not in the script).
	queues := make(map[string][]prepared)
	var order []string
	for _, p := range preps {
		if _, ok := queues[p.r.queue]; !ok {
			order = append(order, p.r.queue)
		}
		queues[p.r.queue] = append(queues[p.r.queue], p)
	}
	args := make([]any, len(order))
	for i, q := range order {
		args[i] = q
	}
	if err := rdb.SAdd(ctx, allQueues, args...).Err(); err != nil {
		return nil, fmt.Errorf("tasks: enqueue batch: register queues: %w", err)
	}
	if _, cluster := rdb.(*redis.ClusterClient); !cluster {
		err := runBatch(ctx, rdb, order, preps, results, now)
		if err != nil {
			return nil, err
		}
		return results, nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, q := range order {
		wg.Go(func() {
			if err := runBatch(ctx, rdb, []string{q}, queues[q], results, now); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		// An error whose outcome is unknown (Redis failed: that queue's
		// script may have run) first, so that the caller looks the
		// tasks up before sending any again; else the conflict of the
		// lowest item.
		for _, err := range errs {
			var be *BatchError
			if !errors.As(err, &be) {
				return results, err
			}
		}
		first := errs[0]
		for _, err := range errs[1:] {
			var a, b *BatchError
			if errors.As(err, &a) && errors.As(first, &b) && a.Index < b.Index {
				first = err
			}
		}
		return results, first
	}
	return results, nil
}

// batchSpanType is the task type the span of a batch is named after: the
// items' type when they all have the same ("<type> publish", like the span
// of a single enqueue), else "batch".
func batchSpanType(items []BatchItem) string {
	if len(items) == 0 {
		return "batch"
	}
	for _, it := range items[1:] {
		if it.Type != items[0].Type {
			return "batch"
		}
	}
	return items[0].Type
}

// prepare checks one item and encodes its task.
func prepare(it BatchItem, carried map[string]string, now time.Time) (prepared, error) {
	if it.Type == "" {
		return prepared{}, fmt.Errorf("%w: empty task type", ErrInvalidOption)
	}
	if err := checkOptions(it.Type, it.Options, now); err != nil {
		return prepared{}, err
	}
	headers := it.headers()
	if len(carried) > 0 {
		if headers == nil {
			headers = make(map[string]string, len(carried))
		}
		maps.Copy(headers, carried)
	}
	r, err := resolve(it.Type, it.Payload, headers, it.Options, now)
	if err != nil {
		return prepared{}, err
	}
	p := prepared{r: r, dedup: it.Dedup}
	if r.scheduled(now) {
		p.score = r.processAt.Unix()
		if p.score <= 0 {
			p.score = 1
		}
	}
	if r.uniqueTTL > 0 {
		ttl := r.uniqueTTL
		if r.scheduled(now) {
			ttl = r.processAt.Add(r.uniqueTTL).Sub(now)
		}
		p.ttl = max(int64(ttl/time.Second), 1)
	}
	if d := it.Dedup; d != nil {
		var delay time.Duration
		if r.scheduled(now) {
			delay = r.processAt.Sub(now)
		}
		if err := CheckDedup(*d, delay); err != nil {
			return prepared{}, fmt.Errorf("%w: %s: %w", ErrInvalidOption, it.Type, err)
		}
		if r.uniqueTTL > 0 {
			return prepared{}, fmt.Errorf("%w: %s: dedup key %q: cannot be combined with unique", ErrInvalidOption, it.Type, d.Key)
		}
		if d.mode() == DedupDebounce {
			p.maxDelay = int64(d.MaxDelay / time.Second)
		}
	}
	p.msg = append(idField(p.r.id), p.r.encodeRest()...)
	return p, nil
}

// runBatch runs the script for preps, whose queues are queues, and fills
// results at their indexes.
func runBatch(ctx context.Context, rdb redis.UniversalClient, queues []string, preps []prepared, results []BatchResult, now time.Time) error {
	qnum := make(map[string]int, len(queues))
	keys := make([]string, 0, 2*len(queues)+len(preps))
	for i, q := range queues {
		qnum[q] = i + 1
		keys = append(keys, "asynq:{"+q+"}:pending", "asynq:{"+q+"}:scheduled")
	}
	args := make([]any, 0, 4+9*len(preps))
	args = append(args, now.UnixNano(), now.Unix(), len(queues), len(preps))
	for _, p := range preps {
		keys = append(keys, "asynq:{"+p.r.queue+"}:t:"+p.r.id)
		if p.ttl > 0 {
			keys = append(keys, p.r.uniqueKey())
		}
		mode, release := "", ""
		if p.dedup != nil {
			keys = append(keys, DedupKey(p.r.queue, p.dedup.Key))
			mode, release = string(p.dedup.mode()), string(p.dedup.release())
		}
		args = append(args, p.r.id, p.msg, p.score, qnum[p.r.queue], p.ttl, mode, release, p.maxDelay, p.r.typ)
	}
	v, err := batchScript.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return fmt.Errorf("tasks: enqueue batch: %w", err)
	}
	if len(v) == 0 {
		return errors.New("tasks: enqueue batch: empty reply")
	}
	if ok, _ := v[0].(int64); ok == 0 {
		if len(v) < 5 {
			return fmt.Errorf("tasks: enqueue batch: short reply %v", v)
		}
		i, _ := v[1].(int64)
		kind, _ := v[2].(string)
		d1, _ := v[3].(string)
		d2, _ := v[4].(string)
		p := preps[i-1]
		be := &BatchError{Index: p.index, ID: p.r.id, Queue: p.r.queue}
		switch kind {
		case "id":
			be.Err, be.Holder, be.HolderState = asynq.ErrTaskIDConflict, d1, d2
		case "unique":
			be.Err, be.Holder = asynq.ErrDuplicateTask, d1
		case "dedup_type":
			be.Err, be.Holder, be.HolderState = fmt.Errorf("%w: dedup key %q is held by a %s task", ErrDedupConflict, p.dedup.Key, d2), d1, "a "+d2+" task"
		default:
			be.Err, be.Holder, be.HolderState = fmt.Errorf("%w: dedup key %q is held by task %s, which is %s", ErrDedupConflict, p.dedup.Key, d1, d2), d1, d2
		}
		return be
	}
	// The items without a dedup key are in as sent.
	for _, p := range preps {
		res := BatchResult{ID: p.r.id, Queue: p.r.queue, Type: p.r.typ, State: asynq.TaskStatePending}
		if p.score > 0 {
			res.State, res.ProcessAt = asynq.TaskStateScheduled, time.Unix(p.score, 0)
		}
		results[p.index] = res
	}
	if (len(v)-1)%5 != 0 {
		return fmt.Errorf("tasks: enqueue batch: reply of %d values", len(v))
	}
	for j := 1; j < len(v); j += 5 {
		i, _ := v[j].(int64)
		id, _ := v[j+1].(string)
		outcome, _ := v[j+2].(int64)
		state, _ := v[j+3].(string)
		score, _ := v[j+4].(int64)
		if i < 1 || int(i) > len(preps) {
			return fmt.Errorf("tasks: enqueue batch: reply names item %d of %d", i, len(preps))
		}
		p := preps[i-1]
		res := BatchResult{ID: id, Queue: p.r.queue, Type: p.r.typ, State: parseState(state)}
		if score > 0 && state == "scheduled" {
			res.ProcessAt = time.Unix(score, 0)
		}
		switch outcome {
		case 2:
			res.Deduplicated = DedupKeep
		case 3:
			res.Deduplicated = DedupReplace
		case 4:
			res.Deduplicated = DedupDebounce
		}
		results[p.index] = res
	}
	return nil
}

// parseState turns asynq's state names into asynq.TaskState.
func parseState(s string) asynq.TaskState {
	for _, st := range []asynq.TaskState{asynq.TaskStateActive, asynq.TaskStatePending, asynq.TaskStateScheduled,
		asynq.TaskStateRetry, asynq.TaskStateArchived, asynq.TaskStateCompleted, asynq.TaskStateAggregating} {
		if st.String() == s {
			return st
		}
	}
	return 0
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// Item validates p as NewTask does and returns it as a BatchItem for
// EnqueueBatch, with the type's default options followed by opts. Errors
// wrap ErrInvalidPayload or ErrInvalidOption.
func (t *Type[P]) Item(p P, opts ...asynq.Option) (BatchItem, error) {
	task, err := t.NewTask(p, opts...)
	if err != nil {
		return BatchItem{}, err
	}
	return BatchItem{Type: task.Type(), Payload: task.Payload(), Options: append(t.def.Defaults(), opts...)}, nil
}

// Item validates payload as NewTask does and returns it as a BatchItem
// for EnqueueBatch, with the type's default options followed by opts.
// Errors wrap ErrInvalidPayload or ErrInvalidOption.
func (d *Definition) Item(payload []byte, opts ...asynq.Option) (BatchItem, error) {
	task, err := d.NewTask(payload, opts...)
	if err != nil {
		return BatchItem{}, err
	}
	return BatchItem{Type: task.Type(), Payload: task.Payload(), Options: append(d.Defaults(), opts...)}, nil
}
