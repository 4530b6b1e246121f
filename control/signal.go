package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Channel is the Redis Pub/Sub channel on which running tasks are told to
// stop: every worker subscribes to it, and the one running the task
// cancels its handler's context. A Redis ACL user needs &forgeq:cancel (or
// &*).
const Channel = "forgeq:cancel"

// Request is the message on Channel: stop task ID of Queue, on behalf of
// By.
type Request struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
	By    string `json:"by"`
}

// Publish tells the workers, on Channel, to stop task r.ID of r.Queue if
// one of them runs it. It only signals: a worker that runs the task
// archives it as cancelled by r.By; nothing happens to a task that is not
// running (use Cancel, which also removes waiting tasks and waits for a
// running one to end). A worker keeps a request for a task it has fetched
// but not started yet for a few seconds. Its error is Redis's.
func Publish(ctx context.Context, rdb redis.UniversalClient, r Request) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("control: publish: %w", err)
	}
	if err := rdb.Publish(ctx, Channel, b).Err(); err != nil {
		return fmt.Errorf("control: tell the workers to stop %s in %s: %w", r.ID, r.Queue, err)
	}
	return nil
}

// ParseRequest decodes a message of Channel. It fails on anything but a
// JSON Request with a queue and an id.
func ParseRequest(payload string) (Request, error) {
	var r Request
	if err := json.Unmarshal([]byte(payload), &r); err != nil {
		return Request{}, fmt.Errorf("control: bad request on %s: %w", Channel, err)
	}
	if r.Queue == "" || r.ID == "" {
		return Request{}, errors.New("control: bad request on " + Channel + ": no queue or id")
	}
	if r.By == "" {
		r.By = "unknown"
	}
	return r, nil
}
