package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// Greeting is the payload of the example's task type.
type Greeting struct {
	Name string `json:"name" help:"who to greet"`
}

// A whole program: a task type, a middleware, a route that enqueues the
// type's tasks and a periodic entry. A real main ends with app.Main(); the
// example runs the worker with Run on an in-memory Redis, posts to the
// route once the worker has started and stops it when the task is done.
func Example() {
	out := make(chan string, 2)
	greet := tasks.Define("greeting:send", "Greets someone.",
		func(ctx context.Context, deps tasks.Deps, p Greeting) ([]byte, error) {
			out <- "Hello, " + p.Name + "!"
			return nil, nil
		})

	app := worker.New("greeter").
		Register(greet).
		Use(func(next asynq.Handler) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				out <- "middleware: " + t.Type()
				return next.ProcessTask(ctx, t)
			})
		}).
		Handle("POST /greetings/{name}", func(s worker.Services) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := greet.Enqueue(r.Context(), s.Client, Greeting{Name: r.PathValue("name")}); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusAccepted)
			})
		}).
		Schedule(worker.Periodic{Name: "daily-greeting", Spec: "@daily", Type: greet.Name(), Payload: Greeting{Name: "world"}})

	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := app.Run(ctx, []string{"--redis-url", "redis://" + mr.Addr(), "--http-addr", "127.0.0.1:0"}, worker.Env{
		Getenv: func(string) string { return "" }, // not the process's environment
		Stderr: io.Discard,                        // the worker's log
		Started: func(s worker.Started) {
			go func() { // Started must not block
				defer cancel()
				res, err := http.Post("http://"+s.HTTPAddr+"/greetings/Ada", "", nil)
				if err != nil {
					fmt.Println(err)
					return
				}
				res.Body.Close()
				fmt.Println(res.Status)
				fmt.Println(<-out)
				fmt.Println(<-out)
			}()
		},
	})
	fmt.Println("exit code", code)

	// Output:
	// 202 Accepted
	// middleware: greeting:send
	// Hello, Ada!
	// exit code 0
}
