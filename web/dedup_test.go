package web_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// TestEnqueueDedup posts tasks with a dedup key: the second is deduplicated
// as its mode says, OnDeduplicated hears of it, and bad dedup fields are a
// 400 naming the field.
func TestEnqueueDedup(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		heard []string
	)
	b := setup(t, func(o *web.Options) {
		o.OnDeduplicated = func(typ, queue, mode string) {
			mu.Lock()
			defer mu.Unlock()
			heard = append(heard, typ+" "+queue+" "+mode)
		}
	})
	type body struct {
		enqueuedBody
		Deduplicated string `json:"deduplicated"`
	}
	post := func(give string) (int, body, string) {
		resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeWarm, Header: jsonHeader, Body: give})
		if resp.Status != http.StatusAccepted {
			return resp.Status, body{}, string(resp.Body)
		}
		return resp.Status, decode[body](t, resp), ""
	}
	_, first, _ := post(`{"payload":{"keys":["a"],"work":1},"dedup_key":"warm-a","delay":"1m"}`)
	_, second, _ := post(`{"payload":{"keys":["b"],"work":1},"dedup_key":"warm-a","dedup_mode":"replace","delay":"1m"}`)
	if first.Deduplicated != "" || second.Deduplicated != "replace" || second.ID != first.ID || second.State != "scheduled" {
		t.Errorf("first %+v, second %+v; want the second to replace the first", first, second)
	}
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(first.Queue, first.ID)
	if err != nil || string(info.Payload) != `{"keys":["b"],"work":1}` {
		t.Errorf("task %+v, %v; want the second payload", info, err)
	}
	mu.Lock()
	if len(heard) != 1 || heard[0] != "cache:warm low replace" {
		t.Errorf("OnDeduplicated heard %q; want one cache:warm low replace", heard)
	}
	mu.Unlock()

	for _, tt := range []struct {
		name, give, want string
	}{
		{"bad mode", `{"payload":{"keys":["a"],"work":1},"dedup_key":"k","dedup_mode":"skip"}`, `field \"dedup_mode\" \"skip\": want keep, replace or debounce`},
		{"no key", `{"payload":{"keys":["a"],"work":1},"dedup_mode":"keep"}`, `need \"dedup_key\"`},
		{"debounce without delay", `{"payload":{"keys":["a"],"work":1},"dedup_key":"k","dedup_mode":"debounce","dedup_max_delay":"1h"}`, "needs a delay"},
		{"with unique", `{"payload":{"keys":["a"],"work":1},"dedup_key":"k","unique":"1h"}`, `give \"dedup_key\" or \"unique\", not both`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, text := post(tt.give)
			if status != http.StatusBadRequest || !strings.Contains(text, tt.want) {
				t.Errorf("status %d, body %s; want 400 saying %s", status, text, tt.want)
			}
		})
	}
}
