package web

import "time"

// BeginShutdown marks s as shutting down, as Run does once its ctx ends,
// without a listener to close.
func BeginShutdown(s *Server) { s.draining.Store(true) }

// DashboardURL is the dashboard's address in the "web listening" log line
// of a server listening on addr.
var DashboardURL = dashboardURL

// SetEventTiming makes the task event streams of s send a heartbeat every
// heartbeat and read the task's state every check.
func SetEventTiming(s *Server, heartbeat, check time.Duration) {
	s.heartbeat.Store(int64(heartbeat))
	s.stateCheck.Store(int64(check))
}
