package tasks_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// Enqueuing from Go code: build the task with its typed constructor, which
// validates the payload and applies the type's default queue, retries and
// timeout, then enqueue it on an asynq client sharing the cache manager's
// one Redis client.
func ExampleNewProcessDataTask() {
	mr, _ := miniredis.Run() // any Redis URL works here
	defer mr.Close()
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr()})
	if err != nil {
		panic(err)
	}
	defer m.Close() // last: asynq does not close a client it was given
	client := asynq.NewClientFromRedisClient(m.Client())
	defer client.Close()

	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:42", Work: 100_000, TTLSeconds: 3600},
		asynq.Retention(time.Hour)) // keep the result an hour after completion
	if err != nil {
		panic(err)
	}
	info, err := client.EnqueueContext(context.Background(), task)
	if err != nil {
		panic(err)
	}
	fmt.Println(info.Type, string(info.Payload))
	fmt.Println("queue", info.Queue, "max retry", info.MaxRetry, "timeout", info.Timeout)

	// A bad payload is refused before anything is enqueued.
	_, err = tasks.NewWarmTask(tasks.Warm{Keys: []string{"a"}, Work: 0})
	fmt.Println(err)
	// Output:
	// data:process {"key":"report:42","work":100000,"ttl_seconds":3600}
	// queue default max retry 5 timeout 10m0s
	// tasks: invalid payload: cache:warm: field "work": 0 is out of range [1, 1000000]
}

// The enqueue CLI and the web process build tasks from a type name and raw
// JSON through the registry, with the same validation.
func ExampleRegistry_NewTask() {
	reg := tasks.Default()
	task, err := reg.NewTask(tasks.TypeInvalidate, []byte(`{ "pattern": "user:*" }`))
	fmt.Println(task.Type(), string(task.Payload()), err)

	_, err = reg.NewTask(tasks.TypeInvalidate, []byte(`{"keys":["user:1"],"pattern":"user:*"}`))
	fmt.Println(err)
	_, err = reg.NewTask("cache:flush", nil)
	fmt.Println(err)
	// Output:
	// cache:invalidate {"pattern":"user:*"} <nil>
	// tasks: invalid payload: cache:invalidate: give one of the fields "keys" and "pattern", not both
	// tasks: unknown task type "cache:flush" (known: cache:invalidate, cache:warm, data:process)
}

// Digest is what data:process computes and caches; it lets a caller check
// a result independently.
func ExampleDigest() {
	fmt.Println(tasks.Digest("abc", 1)) // SHA-256 of "abc"
	fmt.Println(tasks.Digest("abc", 2)) // SHA-256 of that sum
	// Output:
	// ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
	// 4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358
}

// The task catalogue: a worker publishes the types it serves; a producer
// built without them (the enqueue CLI, the web process) looks a type up,
// validates a payload against its published JSON Schema and builds the
// task with its published queue, retries and timeout.
func ExampleCatalog() {
	mr, _ := miniredis.Run() // any Redis, Sentinel or Cluster works here
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	cat := tasks.NewCatalog(rdb)

	// The worker, when it starts (it refreshes with Heartbeat and calls
	// Withdraw when it stops).
	w := tasks.WorkerInfo{ID: "host/4127/9f8e7d", Queues: []string{"critical", "default", "low"}}
	report, err := cat.Publish(ctx, tasks.Default(), w)
	if err != nil {
		panic(err)
	}
	fmt.Println("published", report.Types)

	// A producer that does not know cache:warm.
	warm, err := cat.Lookup(ctx, tasks.TypeWarm)
	if err != nil {
		panic(err)
	}
	fmt.Println(warm.Type, "queue", warm.Queue, "max retry", *warm.MaxRetry, "timeout", warm.Timeout, "served by", warm.Workers[0].ID)
	_, err = warm.NewTask([]byte(`{"keys": ["a", ""], "work": 0}`))
	fmt.Println(err)
	task, err := warm.NewTask([]byte(`{"keys": ["a", "b"], "work": 1000}`))
	fmt.Println(task.Type(), string(task.Payload()), err)

	_, err = cat.Lookup(ctx, "cache:wram")
	fmt.Println(err)
	// Output:
	// published [cache:invalidate cache:warm data:process]
	// cache:warm queue low max retry 3 timeout 30m0s served by host/4127/9f8e7d
	// tasks: invalid payload: cache:warm: field "keys[1]": minLength: got 0, want 1; field "work": minimum: got 0, want 1
	// cache:warm {"keys":["a","b"],"work":1000} <nil>
	// tasks: unknown task type "cache:wram": no worker has ever published it to the task catalogue (published: cache:invalidate, cache:warm, data:process); did you mean "cache:warm"?
}
