package faults

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/forgeq/forgeq/internal/proctest"
)

// exposure collects every password the tests hand out and everything the
// code under test wrote where an operator could see it: process output,
// CLI errors, HTTP bodies. TestMain sweeps it once all tests are done.
var exposure struct {
	mu      sync.Mutex
	secrets []string
	sources []exposed
}

// exposed is one text to sweep, read at sweep time.
type exposed struct {
	name string
	text func() string
}

// newSecret returns a fresh random password and remembers it for the sweep.
func newSecret(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	s := "pw-" + hex.EncodeToString(b)
	exposure.mu.Lock()
	exposure.secrets = append(exposure.secrets, s)
	exposure.mu.Unlock()
	return s
}

// watchProc adds p's whole output to the sweep.
func watchProc(tb testing.TB, p *proctest.Proc) {
	watch(tb.Name()+": "+p.String(), p.Logs)
}

// watchText adds a fixed text (an HTTP body, an error) to the sweep.
func watchText(name, text string) {
	watch(name, func() string { return text })
}

func watch(name string, text func() string) {
	exposure.mu.Lock()
	exposure.sources = append(exposure.sources, exposed{name, text})
	exposure.mu.Unlock()
}

// sweepSecrets returns one message per source that contains a secret, and
// how many sources and bytes it read.
func sweepSecrets() (leaks []string, sources, bytes int) {
	exposure.mu.Lock()
	defer exposure.mu.Unlock()
	for _, src := range exposure.sources {
		text := src.text()
		bytes += len(text)
		for _, s := range exposure.secrets {
			if i := strings.Index(text, s); i >= 0 {
				leaks = append(leaks, fmt.Sprintf("%s contains a password at byte %d: %q",
					src.name, i, excerpt(text, i, len(s))))
			}
		}
	}
	return leaks, len(exposure.sources), bytes
}

// excerpt returns the line of text around [i, i+n), the secret masked.
func excerpt(text string, i, n int) string {
	start := strings.LastIndexByte(text[:i], '\n') + 1
	end := len(text)
	if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
		end = i + j
	}
	line := text[start:i] + "<PASSWORD>" + text[i+n:end]
	if len(line) > 300 {
		line = line[:300] + "..."
	}
	return line
}
