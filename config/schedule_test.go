package config_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/robfig/cron/v3"

	"github.com/forgeq/forgeq/config"
)

func TestLoadSchedule(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveEnv  map[string]string
		giveArgs []string
		want     []config.ScheduleEntry
	}{
		{
			name:    "none by default",
			giveEnv: map[string]string{},
		},
		{
			name:    "empty list",
			giveEnv: map[string]string{"WORKER_SCHEDULE": " [] "},
		},
		{
			name: "from the environment",
			giveEnv: map[string]string{"WORKER_SCHEDULE": `[
				{"name": "purge", "spec": "@every 30s", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}, "queue": "low"},
				{"name": "nightly.report_1", "spec": " 0 3 * * * ", "type": "data:process", "payload": null}
			]`},
			want: []config.ScheduleEntry{
				{Name: "purge", Spec: "@every 30s", Type: "cache:invalidate", Payload: `{"pattern":"tmp:*"}`, Queue: "low",
					Source: `WORKER_SCHEDULE: entry 1 ("purge")`},
				{Name: "nightly.report_1", Spec: "0 3 * * *", Type: "data:process", Payload: "{}",
					Source: `WORKER_SCHEDULE: entry 2 ("nightly.report_1")`},
			},
		},
		{
			name:     "flag over environment",
			giveEnv:  map[string]string{"WORKER_SCHEDULE": `[{"name": "a", "spec": "@hourly", "type": "t"}]`},
			giveArgs: []string{`--worker-schedule=[{"name": "b", "spec": "@daily", "type": "t"}]`},
			want: []config.ScheduleEntry{
				{Name: "b", Spec: "@daily", Type: "t", Payload: "{}", Source: `--worker-schedule: entry 1 ("b")`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(flags(t, tt.giveArgs...), env(tt.giveEnv))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got.Worker.Schedule); d != "" {
				t.Errorf("Schedule (-want +got)\n%s", d)
			}
		})
	}
}

func TestLoadScheduleErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		giveEnv     string // WORKER_SCHEDULE
		giveYAML    string // or a config file
		wantErr     []string
		wantErrsLen int
	}{
		{
			name:    "not JSON",
			giveEnv: `[{"name": "a",`,
			wantErr: []string{`WORKER_SCHEDULE: not a JSON list of schedule entries ({name, spec, type, payload, queue}): unexpected end of JSON input`},
		},
		{
			name:    "an object instead of a list",
			giveEnv: `{"name": "a"}`,
			wantErr: []string{`WORKER_SCHEDULE: not a JSON list of schedule entries`},
		},
		{
			name:    "unknown field",
			giveEnv: `[{"name": "a", "cron": "@hourly", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): json: unknown field "cron"; want an object with name, spec, type, payload, queue`},
		},
		{
			name:    "no name",
			giveEnv: `[{"spec": "@hourly", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1: no name`},
		},
		{
			name:    "bad name",
			giveEnv: `[{"name": "a:b", "spec": "@hourly", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a:b"): name "a:b" has a character outside A-Z a-z 0-9 _ . -`},
		},
		{
			name:    "duplicate name",
			giveEnv: `[{"name": "a", "spec": "@hourly", "type": "t"}, {"name": "a", "spec": "@daily", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 2 ("a"): name "a" is used by entry 1 too`},
		},
		{
			name:    "no spec",
			giveEnv: `[{"name": "a", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): no spec`},
		},
		{
			name:    "bad cron spec",
			giveEnv: `[{"name": "a", "spec": "*/5 * *", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): spec "*/5 * *": expected exactly 5 fields, found 3`},
		},
		{
			name:    "cron field out of range",
			giveEnv: `[{"name": "a", "spec": "61 * * * *", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): spec "61 * * * *": end of range (61) above maximum (59)`},
		},
		{
			name:    "sub-second every",
			giveEnv: `[{"name": "a", "spec": "@every 500ms", "type": "t"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): spec "@every 500ms": want @every and a whole number of seconds, at least 1s`},
		},
		{
			name:    "bad every",
			giveEnv: `[{"name": "a", "spec": "@every often", "type": "t"}]`,
			wantErr: []string{`spec "@every often": want @every and a whole number of seconds`},
		},
		{
			name:    "time zone alone",
			giveEnv: `[{"name": "a", "spec": "CRON_TZ=UTC", "type": "t"}]`,
			wantErr: []string{`spec "CRON_TZ=UTC": a time zone with no schedule after it`},
		},
		{
			name:    "unknown time zone",
			giveEnv: `[{"name": "a", "spec": "CRON_TZ=Mars/Olympus 0 * * * *", "type": "t"}]`,
			wantErr: []string{`spec "CRON_TZ=Mars/Olympus 0 * * * *": provided bad location Mars/Olympus`},
		},
		{
			name:    "no type",
			giveEnv: `[{"name": "a", "spec": "@hourly"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): no task type`},
		},
		{
			name:    "payload not an object",
			giveEnv: `[{"name": "a", "spec": "@hourly", "type": "t", "payload": "{\"k\": 1}"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): payload "{\"k\": 1}" is not a JSON object`},
		},
		{
			name:    "bad queue",
			giveEnv: `[{"name": "a", "spec": "@hourly", "type": "t", "queue": "a b"}]`,
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("a"): queue name "a b": has a character outside`},
		},
		{
			name: "every bad entry reported",
			giveEnv: `[{"name": "a", "spec": "@hourly"}, {"name": "ok", "spec": "@hourly", "type": "t"},
				{"name": "c", "spec": "nope", "type": "t"}]`,
			wantErr: []string{
				`WORKER_SCHEDULE: entry 1 ("a"): no task type`,
				`WORKER_SCHEDULE: entry 3 ("c"): spec "nope"`,
			},
		},
		{
			name:     "file: a map instead of a list",
			giveYAML: "worker:\n  schedule: {name: a}\n",
			wantErr:  []string{`key worker.schedule: want a list of schedule entries, got map[name:a]`},
		},
		{
			name:     "file: bad entry names file, key and entry",
			giveYAML: "worker:\n  schedule:\n    - {name: a, spec: \"@every 1x\", type: t}\n",
			wantErr:  []string{`: key worker.schedule: entry 1 ("a"): spec "@every 1x"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := map[string]string{"WORKER_SCHEDULE": tt.giveEnv}
			if tt.giveYAML != "" {
				e["FORGEQ_CONFIG"] = writeFile(t, "forgeq.yaml", tt.giveYAML)
			}
			_, err := config.Load(nil, env(e))
			wantErrors(t, err, tt.wantErr, nil)
		})
	}
}

func TestParseScheduleSpec(t *testing.T) {
	t.Parallel()

	from := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		give string
		want time.Time // Next(from)
	}{
		{give: "*/5 * * * *", want: time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)},
		{give: "@hourly", want: time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC)},
		// UTC, whatever the local zone.
		{give: "0 6 * * *", want: time.Date(2030, 1, 2, 6, 0, 0, 0, time.UTC)},
		{give: "CRON_TZ=Asia/Tokyo 0 6 * * *", want: time.Date(2030, 1, 2, 21, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			s, err := config.ParseScheduleSpec(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Next(from); !got.Equal(tt.want) {
				t.Errorf("Next(%v) = %v, want %v", from, got, tt.want)
			}
		})
	}

	t.Run("@every", func(t *testing.T) {
		t.Parallel()
		s, err := config.ParseScheduleSpec("@every 1m30s")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(cron.ConstantDelaySchedule{Delay: 90 * time.Second}, s); d != "" {
			t.Errorf("(-want +got)\n%s", d)
		}
	})
}

func TestLoadWorkerSettings(t *testing.T) {
	t.Parallel()

	got, err := config.Load(flags(t, "--redis-embedded-addr", "[::1]:7000"), env(map[string]string{
		"WORKER_TASK_CHECK_INTERVAL": "0.25",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Redis.EmbeddedAddr != "[::1]:7000" || got.Worker.TaskCheckInterval != 250*time.Millisecond {
		t.Errorf("EmbeddedAddr, TaskCheckInterval = %q, %v; want [::1]:7000, 250ms", got.Redis.EmbeddedAddr, got.Worker.TaskCheckInterval)
	}

	_, err = config.Load(nil, env(map[string]string{
		"REDIS_EMBEDDED_ADDR":        "off",
		"WORKER_TASK_CHECK_INTERVAL": "0",
	}))
	wantErrors(t, err, []string{
		`REDIS_EMBEDDED_ADDR: "off" is not host:port`,
		`WORKER_TASK_CHECK_INTERVAL: "0" is not positive`,
	}, []string{"(or off)"})
}
