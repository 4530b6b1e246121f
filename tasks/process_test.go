package tasks_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// sha256Hex chains SHA-256 n times over key, independently of Digest.
func sha256Hex(key string, n int) string {
	b := []byte(key)
	for range n {
		s := sha256.Sum256(b)
		b = s[:]
	}
	return hex.EncodeToString(b)
}

func TestDigest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		giveKey  string
		giveWork int
		want     string
	}{
		{"one round is SHA-256 of the key", "abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"empty key", "", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"zero work counts as one", "abc", 0, sha256Hex("abc", 1)},
		{"two rounds", "abc", 2, sha256Hex("abc", 2)},
		{"one check interval", "report:1", 1024, sha256Hex("report:1", 1024)},
		{"across check intervals", "report:1", 5000, sha256Hex("report:1", 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, tasks.Digest(tt.giveKey, tt.giveWork)); diff != "" {
				t.Errorf("Digest(%q, %d) (-want +got):\n%s", tt.giveKey, tt.giveWork, diff)
			}
		})
	}
}

func BenchmarkDigest(b *testing.B) {
	for b.Loop() {
		tasks.Digest("report:1", 1_000_000)
	}
}

func TestProcessDataComputesThenHits(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	h := b.handler(t, tasks.TypeProcessData)
	ctx := context.Background()
	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:1", Work: 3000})
	if err != nil {
		t.Fatal(err)
	}
	for i, wantComputations := range []uint64{1, 1} {
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if got := b.m.Stats().Computations; got != wantComputations {
			t.Errorf("run %d: computations = %d, want %d", i, got, wantComputations)
		}
	}
	got, err := b.m.Get(ctx, "report:1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tasks.Digest("report:1", 3000), got); diff != "" {
		t.Errorf("cached value (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sha256Hex("report:1", 3000), got); diff != "" {
		t.Errorf("cached value against an independent SHA-256 chain (-want +got):\n%s", diff)
	}
}

func TestProcessDataTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		giveTTL int
		wantTTL time.Duration
	}{
		{"zero is the manager's default", 0, cachemgr.DefaultTTL},
		{"seconds", 90, 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUnit(t)
			task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "k", Work: 1, TTLSeconds: tt.giveTTL})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.handler(t, tasks.TypeProcessData).ProcessTask(context.Background(), task); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantTTL, b.mr.TTL(b.m.Key("k"))); diff != "" {
				t.Errorf("TTL (-want +got):\n%s", diff)
			}
		})
	}
}

// A task cancelled mid-computation (timeout, shutdown) stops computing at
// once and caches nothing.
func TestProcessDataStopsOnCancel(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "slow", Work: tasks.MaxWork})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = b.handler(t, tasks.TypeProcessData).ProcessTask(ctx, task)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if errors.Is(err, asynq.SkipRetry) {
		t.Errorf("error %v wraps SkipRetry; a cancelled task must stay retryable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("handler returned %v after cancellation, want promptly", took)
	}
	if _, err := b.m.Get(context.Background(), "slow"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("Get after a cancelled computation: %v, want ErrMiss", err)
	}
}

// Without a server the ctx has no task id, so every progress report fails:
// the handler logs that at debug level and succeeds anyway, and it reports
// every ~10% or 100ms, not every round.
func TestProcessDataProgressIsBestEffort(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	const work = 300_000
	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "k", Work: work})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.handler(t, tasks.TypeProcessData).ProcessTask(context.Background(), task); err != nil {
		t.Fatalf("a failed progress report failed the task: %v", err)
	}
	took := time.Since(start)
	reports := b.logs.FilterMessage("progress report failed").All()
	// 0%, one per 10 points or 100ms, 100%.
	maxReports := 2 + 10 + int(took/(100*time.Millisecond)) + 1
	t.Logf("%d progress reports in %v", len(reports), took)
	if len(reports) < 2 || len(reports) > maxReports {
		t.Errorf("%d progress reports in %v for %d rounds, want 2 to %d", len(reports), took, work, maxReports)
	}
	for _, r := range reports {
		err, _ := r.ContextMap()["error"].(string)
		if !strings.Contains(err, "ctx is not a task's") {
			t.Errorf("logged error %q, want the missing task id", err)
		}
	}
	if b.mr.Exists(b.m.Key(tasks.ProgressKey(""))) {
		t.Errorf("a progress report was stored without a task id")
	}
}

// Deps.Logger may be nil when a handler is used without NewMux.
func TestProcessDataNilLogger(t *testing.T) {
	t.Parallel()
	b := setupUnit(t)
	def, _ := tasks.Default().Lookup(tasks.TypeProcessData)
	h := def.Handler(tasks.Deps{Cache: b.m})
	if err := h.ProcessTask(context.Background(), asynq.NewTask(tasks.TypeProcessData, []byte(`{"key":"k","work":10}`))); err != nil {
		t.Fatal(err)
	}
}
