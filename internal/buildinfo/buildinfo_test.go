package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	vcs := []debug.BuildSetting{
		{Key: "-compiler", Value: "gc"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "9fff2f6c0ffee"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	tests := []struct {
		name string
		give *debug.BuildInfo
		want string
	}{
		{
			name: "checkout build",
			give: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: modulePath, Version: "(devel)"}, Settings: vcs},
			want: "worker (devel)\n" +
				"  module:   github.com/forgeq/forgeq (devel)\n" +
				"  revision: 9fff2f6c0ffee\n" +
				"  time:     2026-12-01T10:00:00Z\n" +
				"  modified: true\n" +
				"  go:       go1.26.0\n",
		},
		{
			name: "installed at a tag",
			give: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: modulePath, Version: "v0.4.0"}},
			want: "worker v0.4.0\n  module:   github.com/forgeq/forgeq v0.4.0\n  go:       go1.26.0\n",
		},
		{
			name: "own program on forgeq",
			give: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "example.com/reports", Version: "v1.2.3"},
				Deps: []*debug.Module{{Path: "github.com/google/uuid", Version: "v1.6.0"}, {Path: modulePath, Version: "v0.4.0"}}},
			want: "worker v1.2.3\n  module:   example.com/reports v1.2.3\n  forgeq:   github.com/forgeq/forgeq v0.4.0\n  go:       go1.26.0\n",
		},
		{
			name: "no build information",
			want: "worker (unknown version: no build information)\n  go:       " + runtime.Version() + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, format("worker", tt.give)); diff != "" {
				t.Errorf("format (-want +got):\n%s", diff)
			}
		})
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	got := Text("enqueue")
	if !strings.HasPrefix(got, "enqueue ") || !strings.Contains(got, "  go:       go") {
		t.Errorf("Text = %q", got)
	}
}
