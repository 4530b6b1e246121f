package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/forgeq/forgeq/internal/proctest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := proctest.RemoveBuilds(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
