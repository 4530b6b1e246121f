package worker_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// catalogDB is the test database of TestAppCatalog; the tasks package's
// catalogue tests use 16.
const catalogDB = 17

// TestAppCatalog: a worker publishes its task types to the catalogue
// when it starts, and withdraws from them when it stops; the types stay
// published.
func TestAppCatalog(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"miniredis", miniredisURL},
		{"redis", func(tb testing.TB) string { return realRedisURL(tb, catalogDB) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := tt.url(t)
			opts, err := redis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewClient(opts)
			t.Cleanup(func() { rdb.Close() })
			ctx := context.Background()

			own := tasks.Define("test:report", "Builds a report.",
				func(context.Context, tasks.Deps, report) ([]byte, error) { return nil, nil })
			app := worker.New("reports").Register(append(tasks.Builtin(), own)...)
			r := startApp(t, app, url, map[string]string{"WORKER_QUEUES": "critical=6,default=3,low=1"})

			lines := r.logLines("task types published")
			if len(lines) != 1 {
				t.Fatalf("%d \"task types published\" log lines, want 1; log:\n%s", len(lines), r.stderr)
			}
			id, _ := lines[0]["worker_id"].(string)
			wantTypes := []any{"cache:invalidate", "cache:warm", "data:process", "test:report"}
			if diff := cmp.Diff(wantTypes, lines[0]["task_types"]); diff != "" || id == "" {
				t.Errorf("log line %v: task_types (-want +got):\n%s", lines[0], diff)
			}

			doc, err := rdb.HGet(ctx, tasks.CatalogTypesKey, "test:report").Result()
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Type   string          `json:"type"`
				Queue  string          `json:"queue"`
				Schema json.RawMessage `json:"schema"`
			}
			if err := json.Unmarshal([]byte(doc), &got); err != nil {
				t.Fatal(err)
			}
			if got.Type != "test:report" || got.Queue != "default" || string(got.Schema) != string(own.Definition().Schema()) {
				t.Errorf("published document %s, want test:report's", doc)
			}
			for _, typ := range []string{"test:report", tasks.TypeProcessData} {
				members, err := rdb.ZRange(ctx, tasks.CatalogWorkersPrefix+typ, 0, -1).Result()
				if diff := cmp.Diff([]string{id}, members); diff != "" || err != nil {
					t.Errorf("%s workers (%v) (-want +got):\n%s", typ, err, diff)
				}
			}

			if code := r.stop(t); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if n := len(r.logLines("task types withdrawn")); n != 1 {
				t.Errorf("%d \"task types withdrawn\" log lines, want 1", n)
			}
			for _, typ := range wantTypes {
				key := tasks.CatalogWorkersPrefix + typ.(string)
				if n := rdb.ZCard(ctx, key).Val(); n != 0 {
					t.Errorf("%s: %d entries after the shutdown, want 0", key, n)
				}
				if !rdb.HExists(ctx, tasks.CatalogTypesKey, typ.(string)).Val() {
					t.Errorf("%s: not published after the shutdown", typ)
				}
			}
		})
	}
}
