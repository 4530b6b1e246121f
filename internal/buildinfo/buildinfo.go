// Package buildinfo describes the running binary for --version: the
// module version and the commit it was built from, as the Go toolchain
// recorded them (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// modulePath is forgeq's module, named on its own line when it is a
// dependency of the program rather than the program's own module.
const modulePath = "github.com/forgeq/forgeq"

// Text returns the --version text of the program prog:
//
//	prog VERSION
//	  module:   PATH VERSION
//	  forgeq:   github.com/forgeq/forgeq VERSION   (when a dependency)
//	  revision: COMMIT                              (when recorded)
//	  time:     COMMIT TIME                         (when recorded)
//	  modified: true                                (when recorded)
//	  go:       GO VERSION
//
// VERSION is the main module's version: a tag or pseudo-version for `go
// install module@version`, "(devel)" for a build in a checkout.
func Text(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return format(prog, bi)
}

// format is Text for the build info bi; nil means none was recorded.
func format(prog string, bi *debug.BuildInfo) string {
	var b strings.Builder
	if bi == nil {
		fmt.Fprintf(&b, "%s (unknown version: no build information)\n", prog)
		fmt.Fprintf(&b, "  go:       %s\n", runtime.Version())
		return b.String()
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	fmt.Fprintf(&b, "%s %s\n", prog, version)
	if bi.Main.Path != "" {
		fmt.Fprintf(&b, "  module:   %s %s\n", bi.Main.Path, version)
	}
	if bi.Main.Path != modulePath {
		for _, d := range bi.Deps {
			if d.Path != modulePath {
				continue
			}
			if d.Replace != nil {
				d = d.Replace
			}
			fmt.Fprintf(&b, "  forgeq:   %s %s\n", modulePath, d.Version)
		}
	}
	settings := make(map[string]string)
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for _, s := range []struct{ key, label string }{
		{"vcs.revision", "revision"}, {"vcs.time", "time"}, {"vcs.modified", "modified"},
	} {
		if v := settings[s.key]; v != "" {
			fmt.Fprintf(&b, "  %-9s %s\n", s.label+":", v)
		}
	}
	goVersion := bi.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	fmt.Fprintf(&b, "  go:       %s\n", goVersion)
	return b.String()
}
