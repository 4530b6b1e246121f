package control_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/control"
)

// Cancel a task waiting in its queue, then see the answers for a task
// cancelled before and for an unknown one. A running task is cancelled the
// same way: the worker running it stops it and archives it as "cancelled
// by alice".
func ExampleCancel() {
	mr := miniredis.NewMiniRedis() // in a program: the process's Redis client
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("email:welcome", []byte(`{}`)),
		asynq.Queue("default"), asynq.TaskID("welcome-42"), asynq.ProcessIn(time.Hour)); err != nil {
		panic(err)
	}

	res, err := control.Cancel(ctx, rdb, "default", "welcome-42", "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Type, "was", res.Was+":", res.State, "-", res.Reason)

	_, err = control.Cancel(ctx, rdb, "default", "welcome-42", "bob")
	fmt.Println("again:", errors.Is(err, control.ErrFinished))

	_, err = control.Cancel(ctx, rdb, "default", "no-such-task", "bob")
	fmt.Println("unknown:", errors.Is(err, control.ErrNotFound))
	// Output:
	// email:welcome was scheduled: cancelled - cancelled by alice
	// again: true
	// unknown: true
}
