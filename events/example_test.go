package events_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// Square is the payload of the example's task type.
type Square struct {
	N int `json:"n"`
}

// A worker runs the task; WaitResult returns its result the moment the
// worker publishes its succeeded event. The example runs the worker
// in-process on an in-memory Redis.
func ExampleClient_WaitResult() {
	square := tasks.Define("math:square", "Squares a number.",
		func(ctx context.Context, deps tasks.Deps, p Square) ([]byte, error) {
			_ = deps.ReportProgress(ctx, 50, "multiplying")
			return fmt.Appendf(nil, `{"square":%d}`, p.N*p.N), nil
		})

	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan worker.Started, 1)
	done := make(chan int, 1)
	go func() {
		done <- worker.New("squares").Register(square).Run(ctx,
			[]string{"--redis-url", "redis://" + mr.Addr(), "--http-addr", "off"},
			worker.Env{Getenv: func(string) string { return "" }, Stderr: io.Discard,
				Started: func(s worker.Started) { started <- s }})
	}()
	s := <-started

	// Any process can wait: it needs only the Redis client.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	c := events.NewClient(rdb, events.ClientOptions{})

	info, err := square.Enqueue(ctx, s.Enqueuer, Square{N: 12})
	if err != nil {
		log.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	result, err := c.WaitResult(wctx, info.Queue, info.ID)
	var te *events.TaskError
	switch {
	case errors.As(err, &te):
		fmt.Println("task failed:", te.Err)
	case err != nil:
		fmt.Println("wait:", err)
	default:
		fmt.Println(string(result))
	}

	// Its events, from the start of the stream.
	for e, err := range c.Watch(wctx, info.Queue, info.ID, "0") {
		if err != nil {
			log.Fatal(err)
		}
		if e.Kind == events.Progress {
			fmt.Println(e.Kind, e.Percent, e.Message)
		}
		if e.Final() {
			fmt.Println(e.Kind)
			break
		}
	}

	cancel()
	fmt.Println("exit code", <-done)
	// Output:
	// {"square":144}
	// progress 50 multiplying
	// succeeded
	// exit code 0
}

// CheckID tells an event's ID or a stream position (what Watch, HasNewer
// and the web's Last-Event-ID take) from anything else, with an error
// naming the bad value.
func ExampleCheckID() {
	for _, id := range []string{"1733571234567-0:3", "1733571234567-0", "12; DROP"} {
		fmt.Println(id, "->", events.CheckID(id))
	}
	// Output:
	// 1733571234567-0:3 -> <nil>
	// 1733571234567-0 -> <nil>
	// 12; DROP -> events: "12; DROP" is not an event id (such as 1733571234567-0:0) or a stream position (such as 1733571234567-0)
}
