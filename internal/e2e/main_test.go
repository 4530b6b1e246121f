package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/forgeq/forgeq/internal/proctest"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(rawAsynqEnv); addr != "" {
		// Re-executed by BenchmarkIdleCost as its baseline process.
		os.Exit(runRawAsynq(addr))
	}
	code := m.Run()
	if err := proctest.RemoveBuilds(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
