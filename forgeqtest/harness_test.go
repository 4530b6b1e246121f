package forgeqtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/tasks"
)

// stepsArgs is the payload of the test type steps.
type stepsArgs struct {
	Name  string `json:"name"`
	Steps int    `json:"steps" help:"progress reports to make, 1 to 10"`
	Fail  string `json:"fail,omitempty" help:"fail with this error: permanent, transient or empty"`
}

func (a stepsArgs) Validate() error {
	if a.Steps < 1 || a.Steps > 10 {
		return fmt.Errorf("field %q: %d is outside [1, 10]", "steps", a.Steps)
	}
	return nil
}

// stepsResult is what steps returns.
type stepsResult struct {
	Greeting string `json:"greeting"`
}

// errTransient is the error steps fails with for "transient".
var errTransient = errors.New("steps: backend unavailable")

// steps reports one progress step per Steps, caches and logs its
// greeting, and returns it; or fails as Fail says.
var steps = tasks.Define("test:steps", "progress steps", func(ctx context.Context, deps tasks.Deps, a stepsArgs) ([]byte, error) {
	switch a.Fail {
	case "permanent":
		return nil, fmt.Errorf("steps: name %q is banned: %w", a.Name, asynq.SkipRetry)
	case "transient":
		return nil, errTransient
	}
	for i := 1; i <= a.Steps; i++ {
		pct := float64(100*i) / float64(a.Steps)
		if err := deps.ReportProgress(ctx, pct, fmt.Sprintf("step %d of %d", i, a.Steps)); err != nil {
			return nil, err
		}
	}
	greeting := "hello, " + a.Name
	if err := deps.Cache.Set(ctx, "greeting:"+a.Name, greeting, time.Minute); err != nil {
		return nil, err
	}
	deps.Logger.Info("greeted", zap.String("name", a.Name))
	return json.Marshal(stepsResult{Greeting: greeting})
}, asynq.Queue("low"), asynq.MaxRetry(3))

// progressOf keeps the fields of reports that do not depend on the clock.
type progressOf struct {
	TaskID  string
	Percent float64
	Message string
}

func progressFields(ps []tasks.Progress) []progressOf {
	var out []progressOf
	for _, p := range ps {
		out = append(out, progressOf{p.TaskID, p.Percent, p.Message})
	}
	return out
}

func TestRunReportsProgress(t *testing.T) {
	t.Parallel()
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, steps, stepsArgs{Name: "ada", Steps: 3})

	if res.Err != nil {
		t.Fatalf("Run: %v", res.Err)
	}
	want := []progressOf{
		{res.TaskID, 100.0 / 3, "step 1 of 3"},
		{res.TaskID, 200.0 / 3, "step 2 of 3"},
		{res.TaskID, 100, "step 3 of 3"},
	}
	if diff := cmp.Diff(want, progressFields(res.Progress)); diff != "" {
		t.Errorf("progress reports (-want +got):\n%s", diff)
	}
	// Stored too, as a worker's are: the last one is readable.
	last, err := tasks.ReadProgress(t.Context(), h.Manager(), res.TaskID)
	if err != nil || last.Message != "step 3 of 3" {
		t.Errorf("ReadProgress(%s) = %+v, %v; want the last report", res.TaskID, last, err)
	}
	if got := forgeqtest.DecodeResult[stepsResult](t, res); got.Greeting != "hello, ada" {
		t.Errorf("result %+v, want the greeting hello, ada", got)
	}
	if v, err := h.Manager().Get(t.Context(), "greeting:ada"); err != nil || v != "hello, ada" {
		t.Errorf("cached greeting: %q, %v", v, err)
	}
	if n := h.Logs().FilterMessage("greeted").FilterField(zap.String("name", "ada")).Len(); n != 1 {
		t.Errorf("%d greeted log entries, want 1", n)
	}
}

func TestRunGivesEachRunItsOwnTaskID(t *testing.T) {
	t.Parallel()
	h := forgeqtest.New(t)

	a := forgeqtest.Run(h, steps, stepsArgs{Name: "a", Steps: 1})
	b := forgeqtest.Run(h, steps, stepsArgs{Name: "b", Steps: 1})

	if a.TaskID == b.TaskID || a.TaskID == "" {
		t.Errorf("task ids %q and %q, want two different ones", a.TaskID, b.TaskID)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name          string
		give          stepsArgs
		wantErr       error
		wantPermanent bool
	}{
		{name: "permanent", give: stepsArgs{Name: "x", Steps: 1, Fail: "permanent"}, wantErr: asynq.SkipRetry, wantPermanent: true},
		{name: "transient", give: stepsArgs{Name: "x", Steps: 1, Fail: "transient"}, wantErr: errTransient},
		{name: "refused by Validate", give: stepsArgs{Name: "x", Steps: 11}, wantErr: tasks.ErrInvalidPayload, wantPermanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := forgeqtest.New(t)

			res := forgeqtest.Run(h, steps, tt.give)

			if !errors.Is(res.Err, tt.wantErr) {
				t.Errorf("error %v, want one wrapping %v", res.Err, tt.wantErr)
			}
			if res.Permanent() != tt.wantPermanent {
				t.Errorf("Permanent() = %v, want %v (error %v)", res.Permanent(), tt.wantPermanent, res.Err)
			}
			if res.Value != nil || len(res.Progress) > 0 {
				t.Errorf("value %q and %d progress reports, want none", res.Value, len(res.Progress))
			}
		})
	}
}

func TestRunJSONRefusesBadPayloads(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		give    string
		wantErr string
	}{
		{name: "missing field", give: `{"name":"x"}`, wantErr: `tasks: invalid payload: test:steps: missing required field "steps": skip retry for the task`},
		{name: "unknown field", give: `{"name":"x","steps":1,"colour":"red"}`, wantErr: `tasks: invalid payload: test:steps: unknown field "colour": skip retry for the task`},
		{name: "wrong type", give: `{"name":"x","steps":"1"}`, wantErr: `tasks: invalid payload: test:steps: field "steps": want int, got string: skip retry for the task`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := forgeqtest.New(t)

			res := forgeqtest.RunJSON(h, steps.Definition(), []byte(tt.give))

			if res.Err == nil || !res.Permanent() || !errors.Is(res.Err, tasks.ErrInvalidPayload) {
				t.Fatalf("error %v, want a permanent invalid payload", res.Err)
			}
			if diff := cmp.Diff(tt.wantErr, res.Err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// waitArgs is the payload of the test type wait.
type waitArgs struct{}

// wait waits for its context to end: its type's 1s timeout.
var wait = tasks.Define("test:wait", "waits for its timeout", func(ctx context.Context, _ tasks.Deps, _ waitArgs) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		return nil, errors.New("not cancelled")
	}
}, asynq.Timeout(time.Second))

func TestRunAppliesTheTypeTimeout(t *testing.T) {
	t.Parallel()
	h := forgeqtest.New(t)

	start := time.Now()
	res := forgeqtest.Run(h, wait, waitArgs{})

	if !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("error %v, want context.DeadlineExceeded", res.Err)
	}
	if took := time.Since(start); took < time.Second || took > 10*time.Second {
		t.Errorf("took %v, want about the type's 1s timeout", took)
	}
}
