package proctest

import (
	"net"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on when it
// was asked. Another process may take it before the caller binds it;
// RedisServer retries with another port when that happens.
func FreePort(tb testing.TB) int {
	tb.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proctest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
