package faults

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/forgeq/forgeq/internal/proctest"
)

// parallel is how many tests run at once unless -test.parallel says
// otherwise. The tests mostly wait, for processes, leases and timers, not
// for the CPU; go test's default, GOMAXPROCS, would run the long waits one
// after the other.
const parallel = 8

// TestMain runs the tests, then the checks that span all of them: no
// password in anything a process wrote, and no goroutine left behind.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(max(parallel, runtime.GOMAXPROCS(0)))); err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
		}
	}

	code := m.Run()

	leaks, sources, n := sweepSecrets()
	for _, l := range leaks {
		fmt.Fprintln(os.Stderr, "faults: credential leak:", l)
	}
	if len(leaks) > 0 {
		code = 1
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "faults: no password in %d outputs (%d bytes)\n", sources, n)
	}

	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: goroutines left after the tests:", err)
		code = 1
	}

	if err := proctest.RemoveBuilds(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
	}
	os.Exit(code)
}
