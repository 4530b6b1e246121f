package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// TestAppDedup runs a whole worker: two POST /api/tasks/{type} with one
// dedup key make one task (the second replaces the first's payload and
// counts in forgeq_tasks_deduplicated_total), and the worker's middleware
// frees the key when the task starts (the default release).
func TestAppDedup(t *testing.T) {
	type job struct {
		N int `json:"n"`
	}
	type seen struct {
		n    int
		held int64
	}
	ran := make(chan seen, 4)
	var app *worker.App
	var r *runningApp
	jobType := tasks.Define("test:dedup", "Records its payload.", func(ctx context.Context, deps tasks.Deps, p job) ([]byte, error) {
		ran <- seen{p.N, r.Manager.Client().Exists(ctx, tasks.DedupKey("default", "the-key")).Val()}
		return nil, nil
	})
	app = worker.New("dedup").Register(jobType)
	r = startApp(t, app, miniredisURL(t), nil)

	post := func(body string) map[string]any {
		req, err := http.NewRequest(http.MethodPost, r.base+"/api/tasks/test:dedup", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("POST: %d %s", res.StatusCode, b)
		}
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := post(`{"payload":{"n":1},"delay":"2s","dedup_key":"the-key"}`)
	second := post(`{"payload":{"n":2},"delay":"2s","dedup_key":"the-key","dedup_mode":"replace"}`)
	if second["id"] != first["id"] || second["deduplicated"] != "replace" {
		t.Fatalf("first %v, second %v; want the second to replace the first", first, second)
	}
	select {
	case s := <-ran:
		if s.n != 2 || s.held != 0 {
			t.Errorf("ran payload %d with the key held %d; want 2, freed at the start", s.n, s.held)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the task did not run")
	}
	select {
	case s := <-ran:
		t.Errorf("a second task ran: %+v", s)
	case <-time.After(300 * time.Millisecond):
	}
	samples := r.scrape(t, "forgeq_tasks_deduplicated_total")
	if v := samples[`forgeq_tasks_deduplicated_total{mode="replace",queue="default",task_type="test:dedup"}`]; v != 1 {
		t.Errorf("forgeq_tasks_deduplicated_total = %v, want 1; samples %v", v, samples)
	}
}
