package worker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

// asynq v0.26 archives a task whose handler failed on its last attempt
// before it asks IsFailure: a task postponed (tasks.Postpone) on its last
// attempt, with MaxRetry(0) or after its retries ran out, would be archived
// instead of run again. lastAttempts fixes that from the Redis client the
// server uses, as internal/pickup does: the worker's middleware notes the
// tasks it sees postponed on their last attempt with when they are due,
// and a go-redis hook turns the archive script asynq then sends for such a
// task into a retry that counts no failure and no retry, due then. Any
// other call passes through untouched.

// lastAttemptTTL bounds how long a noted postponement waits for its
// archive script (asynq sends it at once; a lost lease sends none).
const lastAttemptTTL = time.Minute

// lastAttempts notes the tasks postponed on their last attempt. It is
// safe for concurrent use.
type lastAttempts struct {
	due   sync.Map // task id -> noted
	notes atomic.Int64
}

// noted is one postponement on a last attempt.
type noted struct {
	due, at time.Time
}

// middleware notes the tasks whose handler chain returns a
// *tasks.PostponeError on their last attempt.
func (a *lastAttempts) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := next.ProcessTask(ctx, t)
		if pe, ok := tasks.AsPostpone(err); ok && tasks.LastAttempt(ctx) {
			if id, ok := asynq.GetTaskID(ctx); ok {
				a.note(id, pe.Delay, time.Now())
			}
		}
		return err
	})
}

// note records that task id, postponed at now, is due after d.
func (a *lastAttempts) note(id string, d time.Duration, now time.Time) {
	a.due.Store(id, noted{due: now.Add(d), at: now})
	if a.notes.Add(1)%256 == 0 {
		a.due.Range(func(k, v any) bool {
			if now.Sub(v.(noted).at) > lastAttemptTTL {
				a.due.Delete(k)
			}
			return true
		})
	}
}

// retryInsteadScript takes the KEYS and ARGV of asynq v0.26's archive
// script (KEYS: task hash, active list, lease set, archived set - replaced
// by the retry set -, then its stats keys; ARGV: id, message, score -
// replaced by the time the task is due -, then the archive's settings) and
// does what asynq's retry script does for an error that is no failure:
// the task leaves the active list and its lease, and waits in the retry
// set until it is due, its retry count unchanged and no failure counted.
const retryInsteadScript = `
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "retry")
return redis.status_reply("OK")
`

// archiveKeys and archiveArgs are the counts of asynq v0.26's archive
// script's KEYS and ARGV.
const (
	archiveKeys = 9
	archiveArgs = 7
)

// hook returns the go-redis hook that turns the archive of a noted task
// into its retry. Add it to the client the asynq server uses before the
// pickup's hook, which sends the scripts that finish tasks on a connection
// of its own.
func (a *lastAttempts) hook() redis.Hook { return lastAttemptHook{a} }

type lastAttemptHook struct{ a *lastAttempts }

func (h lastAttemptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h lastAttemptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.a.rewrite(cmd)
		return next(ctx, cmd)
	}
}

func (h lastAttemptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.a.rewrite(cmd)
		}
		return next(ctx, cmds)
	}
}

// rewrite turns cmd, when it is asynq's archive script for a noted task,
// into retryInsteadScript, in place.
func (a *lastAttempts) rewrite(cmd redis.Cmder) {
	args := cmd.Args()
	if len(args) != 3+archiveKeys+archiveArgs {
		return
	}
	name, _ := args[0].(string)
	if !strings.EqualFold(name, "evalsha") && !strings.EqualFold(name, "eval") {
		return
	}
	if n, ok := args[2].(int); !ok || n != archiveKeys {
		return
	}
	archived, _ := args[3+3].(string)
	q, ok := strings.CutSuffix(archived, "}:archived")
	if !ok || !strings.HasPrefix(q, "asynq:{") {
		return
	}
	id, _ := args[3+archiveKeys].(string)
	v, ok := a.due.LoadAndDelete(id)
	if !ok {
		return
	}
	args[0] = "eval"
	args[1] = retryInsteadScript
	args[3+3] = q + "}:retry"
	args[3+archiveKeys+2] = v.(noted).due.Unix()
}
