package proctest

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// Import paths of the binaries BuildWorker and BuildEnqueue build.
const (
	WorkerPackage  = "github.com/forgeq/forgeq/cmd/worker"
	EnqueuePackage = "github.com/forgeq/forgeq/cmd/enqueue"
)

// builds caches the binaries built by this test process, by package.
var builds struct {
	mu   sync.Mutex
	dir  string                 // made on the first build; removed by RemoveBuilds
	byPk map[string]*buildEntry // one entry per package, built once
}

// buildEntry is one package's build: the first caller builds, the others
// wait on once.
type buildEntry struct {
	once sync.Once
	path string
	err  error
}

// BuildWorker builds cmd/worker once per test process and returns the
// binary's path. It fails the test if the build fails.
func BuildWorker(tb testing.TB) string {
	tb.Helper()
	return Build(tb, WorkerPackage)
}

// BuildEnqueue builds cmd/enqueue once per test process and returns the
// binary's path. It fails the test if the build fails.
func BuildEnqueue(tb testing.TB) string {
	tb.Helper()
	return Build(tb, EnqueuePackage)
}

// Build runs `go build` on the main package pkg (an import path in this
// module) once per test process, with -race when the tests run with it, and
// returns the binary's path. Concurrent callers wait for the one build. A
// failed build fails every test that asks for it. It is safe for
// concurrent use.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()

	builds.mu.Lock()
	if builds.byPk == nil {
		builds.byPk = make(map[string]*buildEntry)
	}
	e := builds.byPk[pkg]
	if e == nil {
		e = &buildEntry{}
		builds.byPk[pkg] = e
	}
	builds.mu.Unlock()

	e.once.Do(func() { e.path, e.err = build(pkg) })
	if e.err != nil {
		tb.Fatal(e.err)
	}
	return e.path
}

// BuildModule runs `go build` on the main package at the root of the
// module in dir (another module, such as examples/reports, which Build
// cannot reach) once per test process, with -race when the tests run with
// it, and returns the binary's path, named after dir. A relative dir is
// taken from the test's working directory. It fails the test if the build
// fails, and is safe for concurrent use.
func BuildModule(tb testing.TB, dir string) string {
	tb.Helper()

	abs, err := filepath.Abs(dir)
	if err != nil {
		tb.Fatalf("proctest: build %s: %v", dir, err)
	}
	key := "module:" + abs
	builds.mu.Lock()
	if builds.byPk == nil {
		builds.byPk = make(map[string]*buildEntry)
	}
	e := builds.byPk[key]
	if e == nil {
		e = &buildEntry{}
		builds.byPk[key] = e
	}
	builds.mu.Unlock()

	e.once.Do(func() { e.path, e.err = buildIn(abs, ".", filepath.Base(abs)) })
	if e.err != nil {
		tb.Fatal(e.err)
	}
	return e.path
}

func build(pkg string) (string, error) { return buildIn("", pkg, path.Base(pkg)) }

// buildIn builds pkg with the working directory dir ("" for the test's)
// into the binary name in the builds dir.
func buildIn(dir, pkg, name string) (string, error) {
	builds.mu.Lock()
	if builds.dir == "" {
		tmp, err := os.MkdirTemp("", "forgeq-proctest-bin-")
		if err != nil {
			builds.mu.Unlock()
			return "", fmt.Errorf("proctest: build %s: %w", pkg, err)
		}
		builds.dir = tmp
	}
	binDir := builds.dir
	builds.mu.Unlock()

	bin := filepath.Join(binDir, name)
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("proctest: go %v (in %s): %v\n%s", args, cmp.Or(dir, "."), err, out)
	}
	return bin, nil
}

// RemoveBuilds deletes the binaries built so far. Call it from TestMain
// after m.Run; a later Build builds again.
func RemoveBuilds() error {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	dir := builds.dir
	builds.dir = ""
	builds.byPk = nil
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("proctest: remove builds: %w", err)
	}
	return nil
}

// Race reports whether the tests run with -race, so that the binaries
// they build are race-instrumented (several times slower): a test may
// then allow more for what depends on the processes' speed.
func Race() bool { return raceEnabled }
