package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
)

// note is the payload of the test types below.
type note struct {
	Text  string `json:"text" help:"what to say"`
	Times int    `json:"times,omitempty"`
}

func (n note) Validate() error {
	if n.Times < 0 {
		return errors.New(`field "times": must not be negative`)
	}
	return nil
}

// recorder is a tasks.Enqueuer that keeps what it is given.
type recorder struct{ tasks []*asynq.Task }

func (r *recorder) EnqueueContext(_ context.Context, t *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
	r.tasks = append(r.tasks, t)
	return &asynq.TaskInfo{ID: "id-" + t.Type(), Type: t.Type(), Payload: t.Payload()}, nil
}

// A typed handle builds, validates and enqueues tasks from the payload
// struct, and a handler reaches the process's enqueuer through deps for
// its follow-up tasks.
func TestTypeEnqueueFollowUp(t *testing.T) {
	t.Parallel()
	echo := tasks.Define("test:echo", "echo the text", func(_ context.Context, _ tasks.Deps, p note) ([]byte, error) {
		return []byte(strings.Repeat(p.Text, max(p.Times, 1))), nil
	}, asynq.Queue("low"), asynq.MaxRetry(2))
	fanout := tasks.Define("test:fanout", "enqueue an echo per word", func(ctx context.Context, deps tasks.Deps, p note) ([]byte, error) {
		for _, w := range strings.Fields(p.Text) {
			if _, err := echo.Enqueue(ctx, deps.Enqueuer, note{Text: w}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	if echo.Name() != "test:echo" || echo.Definition().Queue() != "low" {
		t.Fatalf("Name %q, Queue %q", echo.Name(), echo.Definition().Queue())
	}
	if n, ok := echo.Definition().MaxRetry(); !ok || n != 2 {
		t.Errorf("MaxRetry() = %d, %v; want 2, true", n, ok)
	}
	if _, ok := echo.Definition().Timeout(); ok {
		t.Errorf("Timeout() set without a default")
	}

	rec := &recorder{}
	b := setupUnit(t)
	deps := b.deps
	deps.Enqueuer = rec
	if _, err := fanout.Handle(context.Background(), deps, note{Text: "a b"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, task := range rec.tasks {
		got = append(got, task.Type()+" "+string(task.Payload()))
	}
	want := []string{`test:echo {"text":"a"}`, `test:echo {"text":"b"}`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("enqueued (-want +got):\n%s", diff)
	}

	// Without an enqueuer, and with a payload its Validate refuses.
	if _, err := echo.Enqueue(context.Background(), nil, note{Text: "x"}); !errors.Is(err, tasks.ErrNoEnqueuer) {
		t.Errorf("Enqueue without enqueuer: %v, want ErrNoEnqueuer", err)
	}
	_, err := echo.Enqueue(context.Background(), rec, note{Text: "x", Times: -1})
	if !errors.Is(err, tasks.ErrInvalidPayload) || !strings.Contains(err.Error(), `field "times"`) {
		t.Errorf("Enqueue of a bad payload: %v, want ErrInvalidPayload naming times", err)
	}
	if len(rec.tasks) != 2 {
		t.Errorf("%d tasks enqueued, want still 2", len(rec.tasks))
	}
}

// Process runs the handler on a JSON payload as the worker does: a payload
// that cannot decode fails for good (SkipRetry) without reaching it.
func TestDefinitionProcess(t *testing.T) {
	t.Parallel()
	calls := 0
	typ := tasks.Define("test:count", "count calls", func(_ context.Context, _ tasks.Deps, p note) ([]byte, error) {
		calls++
		return json.Marshal(p)
	})
	b := setupUnit(t)
	got, err := typ.Definition().Process(context.Background(), b.deps, []byte(`{"text":"hi","times":2}`))
	if err != nil || string(got) != `{"text":"hi","times":2}` {
		t.Fatalf("Process = %s, %v", got, err)
	}
	_, err = typ.Definition().Process(context.Background(), b.deps, []byte(`{"txt":"hi"}`))
	if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("bad payload: %v, want SkipRetry and ErrInvalidPayload", err)
	}
	if calls != 1 {
		t.Errorf("handler called %d times, want 1", calls)
	}
}

// Options asynq would not honour as given are refused by every way of
// building a task: typed handles, the untyped definition and the registry.
func TestRefusedOptions(t *testing.T) {
	t.Parallel()
	p := tasks.ProcessData{Key: "k", Work: 1}
	tests := []struct {
		name    string
		give    asynq.Option
		wantMsg string
	}{
		{"group", asynq.Group("nightly"), `group "nightly": task groups are not supported`},
		{"timeout under a second", asynq.Timeout(500 * time.Millisecond), `timeout "500ms": want at least 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			builders := map[string]func() (*asynq.Task, error){
				"typed": func() (*asynq.Task, error) { return tasks.DataProcess.NewTask(p, tt.give) },
				"definition": func() (*asynq.Task, error) {
					return tasks.DataProcess.Definition().NewTask([]byte(`{"key":"k","work":1}`), tt.give)
				},
				"registry": func() (*asynq.Task, error) {
					return tasks.Default().NewTask(tasks.TypeProcessData, []byte(`{"key":"k","work":1}`), tt.give)
				},
				"constructor": func() (*asynq.Task, error) { return tasks.NewProcessDataTask(p, tt.give) },
			}
			for name, build := range builders {
				task, err := build()
				if task != nil || !errors.Is(err, tasks.ErrInvalidOption) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s: task %v, error %v; want ErrInvalidOption with %q", name, task, err, tt.wantMsg)
				}
			}
		})
	}
}

// Progress reports reach Deps.Progress, also outside a worker when the
// ctx carries a task id (as forgeqtest's does).
func TestProgressHook(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	var got []float64
	deps := b.deps
	deps.Progress = func(p tasks.Progress) { got = append(got, p.Percent) }
	ctx := taskctx.WithID(context.Background(), "t-1")
	if _, err := tasks.DataProcess.Handle(ctx, deps, tasks.ProcessData{Key: "k", Work: 5000}); err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 || got[0] != 0 || got[len(got)-1] != 100 {
		t.Errorf("progress reports %v, want 0 first and 100 last", got)
	}
	last, err := tasks.ReadProgress(ctx, b.m, "t-1")
	if err != nil || last.Percent != 100 {
		t.Errorf("stored progress %+v, %v", last, err)
	}
}

// NewRegistry takes typed handles and definitions alike, and refuses a
// name twice and a nil handle.
func TestNewRegistryDeclared(t *testing.T) {
	t.Parallel()
	a := tasks.Define("test:a", "a", func(context.Context, tasks.Deps, note) ([]byte, error) { return nil, nil })
	if _, err := tasks.NewRegistry(a, tasks.CacheWarm.Definition()); err != nil {
		t.Errorf("typed and untyped: %v", err)
	}
	if _, err := tasks.NewRegistry(a, a.Definition()); err == nil || !strings.Contains(err.Error(), `"test:a" defined twice`) {
		t.Errorf("twice: %v", err)
	}
	var nilType *tasks.Type[note]
	if _, err := tasks.NewRegistry(nilType); err == nil {
		t.Errorf("nil handle: no error")
	}
}

// The mux serves a task only with the handler of exactly its type: asynq's
// own prefix routing would hand "test:echo:v2" to the handler of
// "test:echo".
func TestMuxExactType(t *testing.T) {
	t.Parallel()
	calls := 0
	echo := tasks.Define("test:echo", "echo", func(context.Context, tasks.Deps, note) ([]byte, error) {
		calls++
		return nil, nil
	})
	reg, err := tasks.NewRegistry(echo)
	if err != nil {
		t.Fatal(err)
	}
	b := setupUnit(t)
	mux := tasks.NewMux(reg, b.deps)
	if err := mux.ProcessTask(context.Background(), asynq.NewTask("test:echo", []byte(`{"text":"a"}`))); err != nil {
		t.Fatalf("own type: %v", err)
	}
	err = mux.ProcessTask(context.Background(), asynq.NewTask("test:echo:v2", []byte(`{"text":"a"}`)))
	if err == nil || !strings.Contains(err.Error(), `no handler for task type "test:echo:v2"`) {
		t.Errorf("prefixed type: %v, want no handler", err)
	}
	if calls != 1 {
		t.Errorf("handler called %d times, want 1", calls)
	}
}
