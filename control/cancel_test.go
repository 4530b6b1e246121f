package control_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/control"
)

type testBundle struct {
	mr     *miniredis.Miniredis
	rdb    redis.UniversalClient
	client *asynq.Client
	insp   *asynq.Inspector
}

func setup(tb testing.TB) *testBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return &testBundle{mr: mr, rdb: rdb,
		client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb)}
}

// enqueue enqueues a task of type "t:x" with id on queue "q".
func (b *testBundle) enqueue(tb testing.TB, id string, opts ...asynq.Option) {
	tb.Helper()
	opts = append([]asynq.Option{asynq.Queue("q"), asynq.TaskID(id)}, opts...)
	if _, err := b.client.Enqueue(asynq.NewTask("t:x", []byte(`{}`)), opts...); err != nil {
		tb.Fatal(err)
	}
}

var ignoreTime = cmpopts.IgnoreFields(control.Result{}, "CancelledAt")

func TestCancelWaitingTasks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		giveOpt []asynq.Option
		wantWas string
	}{
		{name: "pending", wantWas: "pending"},
		{name: "scheduled", giveOpt: []asynq.Option{asynq.ProcessIn(time.Hour)}, wantWas: "scheduled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.enqueue(t, "id-1", tt.giveOpt...)
			ctx := context.Background()

			got, err := control.Cancel(ctx, b.rdb, "q", "id-1", "alice")
			if err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			want := control.Result{Queue: "q", ID: "id-1", Type: "t:x", Was: tt.wantWas,
				State: control.StateCancelled, By: "alice", Reason: "cancelled by alice"}
			if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
				t.Errorf("Cancel (-want +got):\n%s", diff)
			}
			if got.CancelledAt.IsZero() {
				t.Error("CancelledAt is zero")
			}
			if _, err := b.insp.GetTaskInfo("q", "id-1"); !errors.Is(err, asynq.ErrTaskNotFound) {
				t.Errorf("GetTaskInfo after Cancel: %v, want ErrTaskNotFound: the task is removed", err)
			}
			if ttl := b.mr.TTL("forgeq:cancelled:{q}:id-1"); ttl != control.RecordTTL {
				t.Errorf("record TTL = %v, want RecordTTL", ttl)
			}

			// Again: already finished, with who cancelled it.
			again, err := control.Cancel(ctx, b.rdb, "q", "id-1", "bob")
			if !errors.Is(err, control.ErrFinished) {
				t.Fatalf("second Cancel: %v, want ErrFinished", err)
			}
			if diff := cmp.Diff(want, again, ignoreTime); diff != "" {
				t.Errorf("second Cancel (-want +got):\n%s", diff)
			}

			// Once the record has expired, the task is unknown.
			b.mr.FastForward(control.RecordTTL)
			if _, err := control.Cancel(ctx, b.rdb, "q", "id-1", "bob"); !errors.Is(err, control.ErrNotFound) {
				t.Errorf("Cancel after RecordTTL: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestCancelUnknownTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "other")
	tests := []struct {
		name              string
		giveQueue, giveID string
	}{
		{name: "unknown id", giveQueue: "q", giveID: "nope"},
		{name: "unknown queue", giveQueue: "nowhere", giveID: "other"},
		{name: "empty id", giveQueue: "q", giveID: ""},
		{name: "empty queue", giveQueue: "", giveID: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := control.Cancel(context.Background(), b.rdb, tt.giveQueue, tt.giveID, "alice")
			if !errors.Is(err, control.ErrNotFound) {
				t.Errorf("Cancel: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestCancelFinishedTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	// Archived by someone else: finished, and not "cancelled by".
	b.enqueue(t, "archived")
	if err := b.insp.ArchiveTask("q", "archived"); err != nil {
		t.Fatal(err)
	}
	got, err := control.Cancel(ctx, b.rdb, "q", "archived", "alice")
	if !errors.Is(err, control.ErrFinished) {
		t.Fatalf("Cancel of an archived task: %v, want ErrFinished", err)
	}
	want := control.Result{Queue: "q", ID: "archived", Type: "t:x", State: "archived"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Cancel of an archived task (-want +got):\n%s", diff)
	}
	if info, err := b.insp.GetTaskInfo("q", "archived"); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("task after Cancel: %v, %v; want it archived still", info, err)
	}
}

func TestCancelDefaultsBy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "id-1")
	got, err := control.Cancel(context.Background(), b.rdb, "q", "id-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if got.By != "unknown" || got.Reason != "cancelled by unknown" {
		t.Errorf("By, Reason = %q, %q; want unknown", got.By, got.Reason)
	}
}

func TestCancelRespectsContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "id-1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := control.Cancel(ctx, b.rdb, "q", "id-1", "alice"); !errors.Is(err, context.Canceled) {
		t.Errorf("Cancel with an ended ctx: %v, want context.Canceled", err)
	}
	if _, err := b.insp.GetTaskInfo("q", "id-1"); err != nil {
		t.Errorf("task after a Cancel that did not run: %v, want it still there", err)
	}
}

func TestFindQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, q := range []string{"a", "b", "c"} {
		if _, err := b.client.Enqueue(asynq.NewTask("t:x", nil), asynq.Queue(q), asynq.TaskID("in-"+q)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.client.Enqueue(asynq.NewTask("t:x", nil), asynq.Queue("c"), asynq.TaskID("in-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := control.Cancel(ctx, b.rdb, "b", "in-b", "alice"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		giveID     string
		wantQueues []string
		wantErr    error
	}{
		{giveID: "in-a", wantQueues: []string{"a", "c"}},
		{giveID: "in-b", wantQueues: []string{"b"}}, // its cancellation is recorded
		{giveID: "in-c", wantQueues: []string{"c"}},
		{giveID: "nope", wantErr: control.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.giveID, func(t *testing.T) {
			got, err := control.FindQueues(ctx, b.rdb, tt.giveID)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("FindQueues: %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantQueues, got); diff != "" {
				t.Errorf("FindQueues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPublishAndParseRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	sub := b.rdb.Subscribe(ctx, control.Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	want := control.Request{Queue: "q", ID: "id-1", By: "alice"}
	if err := control.Publish(ctx, b.rdb, want); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := control.ParseRequest(msg.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

func TestParseRequestRefusesBadMessages(t *testing.T) {
	t.Parallel()
	for _, give := range []string{``, `nope`, `{}`, `{"queue":"q"}`, `{"id":"x"}`, `[1]`} {
		if r, err := control.ParseRequest(give); err == nil {
			t.Errorf("ParseRequest(%q) = %+v, want an error", give, r)
		}
	}
	r, err := control.ParseRequest(`{"queue":"q","id":"x"}`)
	if err != nil || r.By != "unknown" {
		t.Errorf("ParseRequest without by = %+v, %v; want by unknown", r, err)
	}
}
