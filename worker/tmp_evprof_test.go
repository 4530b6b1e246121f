package worker

import (
	"os"
	"testing"

	"github.com/forgeq/forgeq/internal/redistest"
)

func BenchmarkTmpEvents(b *testing.B) {
	url := redistest.URL(b, eventsBenchDB)
	on := os.Getenv("EVON") == "1"
	for range b.N {
		eventsThroughputOnce(b, url, on)
	}
}
