package tasks

import (
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of asynq v0.26's TaskMessage (its internal/proto/asynq.proto),
// which EnqueueBatch writes as asynq.Client does; TestMessageMatchesAsynq
// checks them against tasks asynq.Client enqueues.
const (
	msgType      protowire.Number = 1
	msgPayload   protowire.Number = 2
	msgID        protowire.Number = 3
	msgQueue     protowire.Number = 4
	msgRetry     protowire.Number = 5
	msgTimeout   protowire.Number = 8
	msgDeadline  protowire.Number = 9
	msgUniqueKey protowire.Number = 10
	msgRetention protowire.Number = 12
	msgHeaders   protowire.Number = 15
)

// asynq's defaults, as asynq.Client applies them.
const (
	defaultMaxRetry = 25
	defaultTimeout  = 30 * time.Minute
)

// resolved is one task with its options applied as asynq.Client applies
// them.
type resolved struct {
	typ       string
	payload   []byte
	headers   map[string]string
	id        string
	queue     string
	retry     int
	timeout   time.Duration
	deadline  time.Time
	processAt time.Time // zero or not after now: pending
	uniqueTTL time.Duration
	retention time.Duration
}

// resolve applies opts to a task of typ as asynq.Client does (later
// options win; a missing id is a new UUID; neither timeout nor deadline
// means asynq's 30-minute timeout). A group is refused: the worker runs
// no aggregator.
func resolve(typ string, payload []byte, headers map[string]string, opts []asynq.Option, now time.Time) (resolved, error) {
	r := resolved{typ: typ, payload: payload, headers: headers, queue: "default", retry: defaultMaxRetry}
	for _, o := range opts {
		switch o.Type() {
		case asynq.QueueOpt:
			r.queue, _ = o.Value().(string)
		case asynq.TaskIDOpt:
			r.id, _ = o.Value().(string)
		case asynq.MaxRetryOpt:
			r.retry, _ = o.Value().(int)
		case asynq.TimeoutOpt:
			r.timeout, _ = o.Value().(time.Duration)
		case asynq.DeadlineOpt:
			r.deadline, _ = o.Value().(time.Time)
		case asynq.UniqueOpt:
			r.uniqueTTL, _ = o.Value().(time.Duration)
		case asynq.ProcessAtOpt:
			r.processAt, _ = o.Value().(time.Time)
		case asynq.ProcessInOpt:
			d, _ := o.Value().(time.Duration)
			r.processAt = now.Add(d)
		case asynq.RetentionOpt:
			r.retention, _ = o.Value().(time.Duration)
		case asynq.GroupOpt:
			return r, fmt.Errorf("%w: %s: group: task groups are not supported", ErrInvalidOption, typ)
		}
	}
	if r.retry < 0 {
		r.retry = 0
	}
	if r.id == "" {
		r.id = uuid.NewString()
	}
	if r.timeout == 0 && r.deadline.IsZero() {
		r.timeout = defaultTimeout
	}
	return r, nil
}

// scheduled reports whether r runs later than now (asynq: a scheduled
// task; otherwise pending).
func (r *resolved) scheduled(now time.Time) bool { return r.processAt.After(now) }

// uniqueKey is asynq's uniqueness lock key of r (base.UniqueKey).
func (r *resolved) uniqueKey() string {
	if r.uniqueTTL <= 0 {
		return ""
	}
	if r.payload == nil {
		return "asynq:{" + r.queue + "}:unique:" + r.typ + ":"
	}
	return "asynq:{" + r.queue + "}:unique:" + r.typ + ":" + md5Hex(r.payload)
}

// encodeRest encodes r as asynq's TaskMessage without its id field, which
// EnqueueBatch puts first (idField); the batch script swaps it for the
// id of the task it replaces.
// Fields with their zero value are left out, as proto3 does.
func (r *resolved) encodeRest() []byte {
	var b []byte
	str := func(n protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, n, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	num := func(n protowire.Number, v int64) {
		if v != 0 {
			b = protowire.AppendTag(b, n, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	str(msgType, r.typ)
	if len(r.payload) > 0 {
		b = protowire.AppendTag(b, msgPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, r.payload)
	}
	str(msgQueue, r.queue)
	num(msgRetry, int64(int32(r.retry)))
	num(msgTimeout, int64(r.timeout/time.Second))
	if !r.deadline.IsZero() {
		num(msgDeadline, r.deadline.Unix())
	}
	str(msgUniqueKey, r.uniqueKey())
	num(msgRetention, int64(r.retention/time.Second))
	keys := make([]string, 0, len(r.headers))
	for k := range r.headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, r.headers[k])
		b = protowire.AppendTag(b, msgHeaders, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// idField encodes the id field of a TaskMessage, as the batch script does.
func idField(id string) []byte {
	b := protowire.AppendTag(nil, msgID, protowire.BytesType)
	return protowire.AppendString(b, id)
}
