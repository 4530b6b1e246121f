package forgeqtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// ResizeArgs is the payload of the example's image:resize tasks.
type ResizeArgs struct {
	ImageID string `json:"image_id" help:"the image to resize"`
	Widths  []int  `json:"widths" help:"the widths of the thumbnails, in pixels"`
}

// ResizeResult is the result of an image:resize task.
type ResizeResult struct {
	Thumbnails int `json:"thumbnails"`
}

// UploadArgs is the payload of the example's image:upload tasks.
type UploadArgs struct {
	ImageID string `json:"image_id"`
	Width   int    `json:"width"`
}

// Upload uploads one thumbnail; here it does nothing.
var Upload = tasks.Define("image:upload", "Upload a thumbnail",
	func(context.Context, tasks.Deps, UploadArgs) ([]byte, error) { return nil, nil },
	asynq.Queue("low"))

// Resize makes a thumbnail per width, reporting its progress, and enqueues
// an upload of each.
var Resize = tasks.Define("image:resize", "Make an image's thumbnails",
	func(ctx context.Context, deps tasks.Deps, a ResizeArgs) ([]byte, error) {
		if len(a.Widths) == 0 {
			return nil, fmt.Errorf("image %s: no widths: %w", a.ImageID, asynq.SkipRetry)
		}
		for i, w := range a.Widths {
			if _, err := Upload.Enqueue(ctx, deps.Enqueuer, UploadArgs{ImageID: a.ImageID, Width: w}); err != nil {
				return nil, err
			}
			deps.ReportBestEffort(ctx, float64(100*(i+1)/len(a.Widths)), fmt.Sprintf("%d px done", w))
		}
		return json.Marshal(ResizeResult{Thumbnails: len(a.Widths)})
	})

// Run a handler and look at its result, progress reports and follow-up
// tasks.
func ExampleRun() {
	t, finish := exampleT() // in a test: the *testing.T
	defer finish()

	h := forgeqtest.New(t)
	res := forgeqtest.Run(h, Resize, ResizeArgs{ImageID: "cat", Widths: []int{64, 256}})

	fmt.Println(forgeqtest.DecodeResult[ResizeResult](t, res).Thumbnails, "thumbnails")
	for _, p := range res.Progress {
		fmt.Printf("%.0f%% %s\n", p.Percent, p.Message)
	}
	for _, up := range forgeqtest.Payloads(t, h.Enqueuer(), Upload) {
		fmt.Println("upload", up.ImageID, up.Width)
	}
	fmt.Println("queue", h.Enqueuer().OfType(Upload.Name())[0].Queue)
	// Output:
	// 2 thumbnails
	// 50% 64 px done
	// 100% 256 px done
	// upload cat 64
	// upload cat 256
	// queue low
}

// A handler's permanent failure, and a payload the type refuses.
func ExampleRunJSON() {
	t, finish := exampleT()
	defer finish()

	h := forgeqtest.New(t)
	res := forgeqtest.Run(h, Resize, ResizeArgs{ImageID: "cat", Widths: []int{}})
	fmt.Println(res.Permanent(), res.Err)

	res = forgeqtest.RunJSON(h, Resize.Definition(), []byte(`{"image_id":"cat"}`))
	fmt.Println(res.Permanent(), res.Err)
	// Output:
	// true image cat: no widths: skip retry for the task
	// true tasks: invalid payload: image:resize: missing required field "widths": skip retry for the task
}

// Check the options code under test enqueues with, as asynq resolves them.
func ExampleRecorder() {
	t, finish := exampleT()
	defer finish()

	rec := forgeqtest.NewRecorder(t)
	info, err := Upload.Enqueue(t.Context(), rec, UploadArgs{ImageID: "cat", Width: 64},
		asynq.MaxRetry(2), asynq.Retention(time.Hour))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(info.Type, info.Queue, info.MaxRetry, info.Timeout, info.Retention, info.State)
	fmt.Println(len(rec.Enqueued()), "enqueued")
	// Output:
	// image:upload low 2 30m0s 1h0m0s pending
	// 1 enqueued
}

// Run a whole worker in the test process and wait for a task.
func ExampleStartWorker() {
	t, finish := exampleT()
	defer finish()

	app := worker.New("images").Register(Resize, Upload)
	w := forgeqtest.StartWorker(t, app, forgeqtest.WorkerOptions{})

	info, err := Resize.Enqueue(t.Context(), w.Client(), ResizeArgs{ImageID: "cat", Widths: []int{64}},
		asynq.Retention(time.Hour)) // readable once completed
	if err != nil {
		fmt.Println(err)
		return
	}
	done := w.WaitTask(t, info.Queue, info.ID, 30*time.Second)
	fmt.Println(done.State, string(done.Result))
	// Output:
	// completed {"thumbnails":1}
}

// exampleT returns a testing.TB for the examples, standing in for the
// test's *testing.T, and the function that ends its "test": it cancels its
// context and runs its cleanups. A failure panics.
func exampleT() (testing.TB, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	t := &fakeT{ctx: ctx}
	return t, func() {
		cancel()
		for i := len(t.cleanups) - 1; i >= 0; i-- {
			t.cleanups[i]()
		}
	}
}

// fakeT implements the testing.TB methods forgeqtest and zaptest call.
type fakeT struct {
	testing.TB // nil: the methods below are all that is called
	ctx        context.Context
	cleanups   []func()
}

func (t *fakeT) Helper()                      {}
func (t *fakeT) Name() string                 { return "Example" }
func (t *fakeT) Context() context.Context     { return t.ctx }
func (t *fakeT) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *fakeT) Log(...any)                   {}
func (t *fakeT) Logf(string, ...any)          {}
func (t *fakeT) Failed() bool                 { return false }
func (t *fakeT) Fail()                        { panic("example failed") }
func (t *fakeT) FailNow()                     { panic("example failed") }
func (t *fakeT) Error(args ...any)            { panic(fmt.Sprint(args...)) }
func (t *fakeT) Errorf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (t *fakeT) Fatal(args ...any)            { panic(fmt.Sprint(args...)) }
func (t *fakeT) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
