package pickup

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of asynq v0.26's TaskMessage (internal/proto/asynq.proto),
// checked by TestTaskMessageFields against messages asynq.Client writes.
const (
	fieldID        protowire.Number = 3
	fieldQueue     protowire.Number = 4
	fieldRetention protowire.Number = 12
)

// maxBatchedArgs is the most arguments a script call shared in a
// pipeline may have.
const maxBatchedArgs = 64

// Hook returns the go-redis hook to add to the client the asynq server
// uses. Commands other than asynq's dequeue script and result writes pass
// straight through.
func (p *Pickup) Hook() redis.Hook { return hook{p} }

type hook struct{ p *Pickup }

func (hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	p := h.p
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "evalsha", "eval":
			args := cmd.Args()
			if c, ok := parseDequeue(args); ok {
				if rc, ok := cmd.(*redis.Cmd); ok {
					return p.onDequeue(ctx, rc, c, next)
				}
			}
			keys := scriptKeys(args)
			// A result held back goes out before a script that keeps
			// the task's hash (retry, archive, requeue): only asynq's
			// done script deletes it.
			cmds := append(p.forgetTasks(ctx, keys, !deletesTask(keys)), cmd)
			// A big call (a workflow's submission) goes alone: it would
			// hold up the small ones sharing its pipeline.
			if !p.closed.Load() && len(args) <= maxBatchedArgs && finishesTask(keys) {
				if sent, err := p.batcher.do(cmds...); sent {
					return err
				}
			}
			for _, c := range cmds[:len(cmds)-1] {
				_ = next(ctx, c) // the script's own answer is what asynq reads
			}
		case "hset":
			args := cmd.Args()
			if id, ok := resultWrite(args); ok {
				if _, held := p.held.Load(id); held {
					if ic, ok := cmd.(*redis.IntCmd); ok {
						p.held.Store(id, &heldResult{key: argString(args[1]), value: args[3]})
						p.skipped.Add(1)
						ic.SetVal(1)
						return nil
					}
				}
			}
		}
		return next(ctx, cmd)
	}
}

// dequeueCall is one call of asynq's dequeue script.
type dequeueCall struct {
	queue string
	lease any // ARGV[1], the lease's expiry in unix seconds, as asynq passed it
}

// parseDequeue recognises asynq's dequeue script by its keys: pending,
// paused, active and lease of one queue, then the lease expiry and the
// task key prefix.
func parseDequeue(args []any) (dequeueCall, bool) {
	// evalsha SHA 4 pending paused active lease expiry prefix
	if len(args) != 9 || argString(args[2]) != "4" {
		return dequeueCall{}, false
	}
	q, ok := queueOf(argString(args[3]), "pending")
	if !ok {
		return dequeueCall{}, false
	}
	for i, suffix := range [...]string{"paused", "active", "lease"} {
		if r, ok := queueOf(argString(args[4+i]), suffix); !ok || r != q {
			return dequeueCall{}, false
		}
	}
	if r, ok := queueOf(argString(args[8]), "t:"); !ok || r != q {
		return dequeueCall{}, false
	}
	return dequeueCall{queue: q, lease: args[7]}, true
}

// queueOf returns q of "asynq:{q}:" + suffix.
func queueOf(key, suffix string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "asynq:{")
	if !ok {
		return "", false
	}
	rest, ok = strings.CutSuffix(rest, suffix)
	if !ok {
		return "", false
	}
	q, ok := strings.CutSuffix(rest, "}:")
	return q, ok && q != ""
}

// resultWrite returns the task id of asynq's result write, HSET
// asynq:{q}:t:<id> result <data>.
func resultWrite(args []any) (string, bool) {
	if len(args) != 4 || argString(args[2]) != "result" {
		return "", false
	}
	return taskID(argString(args[1]))
}

// taskID returns id of the task key asynq:{q}:t:<id>.
func taskID(key string) (string, bool) {
	if !strings.HasPrefix(key, "asynq:{") {
		return "", false
	}
	i := strings.Index(key, "}:t:")
	if i < 0 || i+4 >= len(key) {
		return "", false
	}
	return key[i+4:], true
}

// scriptKeys returns the keys of an EVAL or EVALSHA command's args.
func scriptKeys(args []any) []any {
	if len(args) < 3 {
		return nil
	}
	n, err := strconv.Atoi(argString(args[2]))
	if err != nil || n < 0 {
		return nil
	}
	return args[3:min(3+n, len(args))]
}

// heldResult is a result write held back for a running task without
// retention: asynq deletes the task's hash when it succeeds, so the write
// is sent only if the task ends otherwise. The zero value: none yet.
type heldResult struct {
	key   string
	value any
}

// forgetTasks drops the tasks whose keys a script names (asynq's done,
// complete, retry, archive and requeue scripts) from held and inflight:
// they have finished, or left this worker. With send it returns the
// result writes held for them, to go out before the script.
func (p *Pickup) forgetTasks(ctx context.Context, keys []any, send bool) []redis.Cmder {
	var out []redis.Cmder
	for _, a := range keys {
		id, ok := taskID(argString(a))
		if !ok {
			continue
		}
		if v, ok := p.held.LoadAndDelete(id); ok && send {
			if h := v.(*heldResult); h.key != "" {
				out = append(out, redis.NewIntCmd(ctx, "hset", h.key, "result", h.value))
			}
		}
		p.mu.Lock()
		delete(p.inflight, id)
		p.mu.Unlock()
	}
	return out
}

// deletesTask reports whether a script that names a task is asynq's done
// script, which deletes the task's hash (the task has no retention): it
// counts the task as processed, and puts it in no other state.
func deletesTask(keys []any) bool {
	processed := false
	for _, k := range keys {
		s := argString(k)
		if !strings.HasPrefix(s, "asynq:{") {
			continue
		}
		switch {
		case strings.HasSuffix(s, "}:retry"), strings.HasSuffix(s, "}:archived"),
			strings.HasSuffix(s, "}:pending"), strings.HasSuffix(s, "}:completed"):
			return false
		case strings.HasSuffix(s, "}:processed"):
			processed = true
		}
	}
	return processed
}

// note records a task message handed to asynq: it is in flight until a
// script names it again, and when it has no retention asynq deletes its
// hash if it succeeds, so its result writes are held back until it ends.
func (p *Pickup) note(msg string) {
	m, ok := decodeMessage([]byte(msg))
	if !ok || m.id == "" {
		return
	}
	p.mu.Lock()
	p.inflight[m.id] = handed{queue: m.queue, at: time.Now()}
	p.mu.Unlock()
	if m.retention == 0 {
		p.held.Store(m.id, &heldResult{})
	}
}

// message is what the hook reads of an asynq task message.
type message struct {
	id, queue string
	retention int64
}

// decodeMessage reads the id, queue and retention of an asynq task
// message.
func decodeMessage(b []byte) (message, bool) {
	var m message
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, false
		}
		b = b[n:]
		switch {
		case (num == fieldID || num == fieldQueue) && typ == protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return m, false
			}
			if num == fieldID {
				m.id = string(v)
			} else {
				m.queue = string(v)
			}
			n = k
		case num == fieldRetention && typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return m, false
			}
			m.retention, n = int64(v), k
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m, false
			}
		}
		b = b[n:]
	}
	return m, true
}

// argString is a command argument as Redis receives it.
func argString(a any) string {
	switch v := a.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}
