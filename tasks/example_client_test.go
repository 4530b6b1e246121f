package tasks_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// Every forgeq entry point enqueues through a Client: the task carries the
// caller's request id (and, when tracing is on, its trace context) in its
// headers, and an "enqueued" event goes to the queue's event stream.
func ExampleNewClient() {
	mr, _ := miniredis.Run() // any Redis URL works here
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close() // last: asynq does not close a client it was given
	pub := events.NewPublisher(rdb, events.PublisherOptions{})
	defer pub.Close()
	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()
	client := tasks.NewClient(ac, tasks.ClientOptions{Events: pub})

	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:42", Work: 1})
	if err != nil {
		panic(err)
	}
	ctx := telemetry.WithRequestID(context.Background(), "a1b2-7") // the web process sets it per request
	info, err := client.EnqueueContext(ctx, task, asynq.TaskID("report-42"))
	if err != nil {
		panic(err)
	}
	ti, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(info.Queue, info.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(info.ID, info.Queue, ti.Headers)
	// Output:
	// report-42 default map[x-request-id:a1b2-7]
}
