package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

// EnqueueBatch writes a batch with one script: every task, or none.
func ExampleEnqueueBatch() {
	mr := miniredis.NewMiniRedis() // a real program passes its own client
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	var items []tasks.BatchItem
	for i, key := range []string{"report:1", "report:2"} {
		it, err := tasks.DataProcess.Item(tasks.ProcessData{Key: key, Work: 100}, asynq.TaskID(fmt.Sprint("report-", i+1)))
		if err != nil {
			panic(err)
		}
		items = append(items, it)
	}
	res, err := tasks.EnqueueBatch(ctx, rdb, items)
	if err != nil {
		panic(err)
	}
	for _, r := range res {
		fmt.Println(r.ID, r.Queue, r.State)
	}

	// A taken id in the middle of a batch: nothing of it is enqueued.
	more := []tasks.BatchItem{
		{Type: tasks.TypeProcessData, Payload: []byte(`{"key":"report:3","work":1}`)},
		{Type: tasks.TypeProcessData, Payload: []byte(`{"key":"report:4","work":1}`), Options: []asynq.Option{asynq.TaskID("report-2")}},
		{Type: tasks.TypeProcessData, Payload: []byte(`{"key":"report:5","work":1}`)},
	}
	_, err = tasks.EnqueueBatch(ctx, rdb, more)
	var be *tasks.BatchError
	if errors.As(err, &be) && errors.Is(err, asynq.ErrTaskIDConflict) {
		fmt.Println("conflict at item", be.Index, "id", be.ID)
	}
	qi, _ := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default")
	fmt.Println("pending:", qi.Pending)
	// Output:
	// report-1 default pending
	// report-2 default pending
	// conflict at item 1 id report-2
	// pending: 2
}

// A dedup key in debounce mode: each enqueue replaces the waiting task's
// payload and pushes its run time back, at most MaxDelay past the first.
func ExampleDedup() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	d := &tasks.Dedup{Key: "reindex:user:42", Mode: tasks.DedupDebounce, MaxDelay: 10 * time.Minute}
	var first string
	for i := range 3 {
		it, err := tasks.DataProcess.Item(tasks.ProcessData{Key: "user:42", Work: i + 1}, asynq.ProcessIn(time.Minute))
		if err != nil {
			panic(err)
		}
		it.Dedup = d
		res, err := tasks.EnqueueBatch(ctx, rdb, []tasks.BatchItem{it})
		if err != nil {
			panic(err)
		}
		if i == 0 {
			first = res[0].ID
		}
		fmt.Printf("enqueue %d: same task %v, deduplicated %q, %v\n", i+1, res[0].ID == first, res[0].Deduplicated, res[0].State)
	}
	// Output:
	// enqueue 1: same task true, deduplicated "", scheduled
	// enqueue 2: same task true, deduplicated "debounce", scheduled
	// enqueue 3: same task true, deduplicated "debounce", scheduled
}
