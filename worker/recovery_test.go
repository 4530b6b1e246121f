package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeTaskInspector answers GetTaskInfo with info or err and records the
// calls.
type fakeTaskInspector struct {
	info  *asynq.TaskInfo
	err   error
	calls []string // queue/id
}

func (f *fakeTaskInspector) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	f.calls = append(f.calls, queue+"/"+id)
	return f.info, f.err
}

func TestRecoveries(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	recoveredAt := now.Add(-20 * time.Second)

	tests := []struct {
		name        string
		giveRetried int
		giveInfo    *asynq.TaskInfo
		giveErr     error
		wantCalls   []string
		wantCounted []string // type/queue
		wantFields  map[string]any
	}{
		{
			name:        "first attempt: not looked up",
			giveRetried: 0,
			giveInfo:    &asynq.TaskInfo{LastErr: asynq.ErrLeaseExpired.Error(), LastFailedAt: recoveredAt},
		},
		{
			name:        "retry after a lease expired",
			giveRetried: 1,
			giveInfo:    &asynq.TaskInfo{LastErr: asynq.ErrLeaseExpired.Error(), LastFailedAt: recoveredAt},
			wantCalls:   []string{"critical/t-1"},
			wantCounted: []string{"report:build/critical"},
			wantFields: map[string]any{
				"task_id": "t-1", "task_type": "report:build", "queue": "critical", "retry": int64(1),
				// 20s since the recovery, which came at least 30s after the
				// lease ended, 30s after the dead worker's last extension.
				"orphaned_for": 80 * time.Second,
				"recovered_at": recoveredAt,
			},
		},
		{
			name:        "retry after a handler error",
			giveRetried: 2,
			giveInfo:    &asynq.TaskInfo{LastErr: "report:build: timeout", LastFailedAt: recoveredAt},
			wantCalls:   []string{"critical/t-1"},
		},
		{
			name:        "task info unreadable",
			giveRetried: 1,
			giveErr:     errors.New("redis down"),
			wantCalls:   []string{"critical/t-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			insp := &fakeTaskInspector{info: tt.giveInfo, err: tt.giveErr}
			core, logs := observer.New(zapcore.InfoLevel)
			var counted []string
			r := newRecoveries(insp, zap.New(core), func(typ, queue string) { counted = append(counted, typ+"/"+queue) })
			r.now = func() time.Time { return now }
			r.meta = func(context.Context) taskMeta { return taskMeta{id: "t-1", queue: "critical", retried: tt.giveRetried} }

			handlerErr := errors.New("handler result")
			ran := 0
			h := r.middleware(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran++; return handlerErr }))
			if err := h.ProcessTask(t.Context(), asynq.NewTask("report:build", nil)); !errors.Is(err, handlerErr) || ran != 1 {
				t.Errorf("ProcessTask = %v after %d handler calls, want the handler's error after 1", err, ran)
			}

			if diff := cmp.Diff(tt.wantCalls, insp.calls); diff != "" {
				t.Errorf("GetTaskInfo calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCounted, counted); diff != "" {
				t.Errorf("counted recoveries (-want +got):\n%s", diff)
			}
			var gotFields map[string]any
			switch lines := logs.FilterMessage(msgRecovered).All(); len(lines) {
			case 0:
			case 1:
				if lines[0].Level != zapcore.WarnLevel {
					t.Errorf("%q logged at %v, want warn", msgRecovered, lines[0].Level)
				}
				gotFields = lines[0].ContextMap()
			default:
				t.Fatalf("%d %q lines, want at most 1", len(lines), msgRecovered)
			}
			if diff := cmp.Diff(tt.wantFields, gotFields); diff != "" {
				t.Errorf("%q fields (-want +got):\n%s", msgRecovered, diff)
			}
		})
	}
}
