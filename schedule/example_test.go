package schedule_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// A program adds a periodic entry while its workers run, pauses it,
// resumes it and removes it. Every worker on the same Redis runs it
// within a second, and enqueues each tick once.
func ExampleStore() {
	ctx := context.Background()
	mr, _ := miniredis.Run() // the workers' Redis
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// Entries are checked against the program's types and the task
	// catalogue the workers publish.
	st := schedule.NewStore(rdb, workflow.CatalogTypes(tasks.Default(), tasks.NewCatalog(rdb)))

	e, created, err := st.Put(ctx, schedule.Entry{
		Name:    "purge-tmp",
		Spec:    "@every 30s",
		Type:    "cache:invalidate",
		Payload: json.RawMessage(`{"pattern": "tmp:*"}`),
		Queue:   "low",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("added:", created, e.Name, e.Spec, string(e.Payload))

	_, _, err = st.Put(ctx, schedule.Entry{Name: "bad", Spec: "@every 30s", Type: "cache:invalidate", Payload: json.RawMessage(`{}`)})
	fmt.Println("refused:", errors.Is(err, schedule.ErrInvalid))

	e, _ = st.Pause(ctx, "purge-tmp")
	fmt.Println("paused:", e.Paused)
	e, _ = st.Resume(ctx, "purge-tmp")
	fmt.Println("paused:", e.Paused)

	list, _ := st.List(ctx)
	fmt.Println("stored:", len(list), list[0].Name, "next tick on a multiple of 30s:", list[0].Next.Unix()%30 == 0)

	fmt.Println("removed:", st.Remove(ctx, "purge-tmp") == nil)
	_, err = st.Get(ctx, "purge-tmp")
	fmt.Println("gone:", errors.Is(err, schedule.ErrNotFound))
	// Output:
	// added: true purge-tmp @every 30s {"pattern":"tmp:*"}
	// refused: true
	// paused: true
	// paused: false
	// stored: 1 purge-tmp next tick on a multiple of 30s: true
	// removed: true
	// gone: true
}
