package web

// BeginShutdown marks s as shutting down, as Run does once its ctx ends,
// without a listener to close.
func BeginShutdown(s *Server) { s.draining.Store(true) }

// DashboardURL is the dashboard's address in the "web listening" log line
// of a server listening on addr.
var DashboardURL = dashboardURL
