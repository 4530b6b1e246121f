package web

import (
	"bytes"
	"html/template"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// indexRoute is one line of the index: a route and what it does.
type indexRoute struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Description string `json:"description"`
}

// indexBody is the JSON body of GET /.
type indexBody struct {
	Name      string       `json:"name"`
	Dashboard string       `json:"dashboard"`
	Workflows string       `json:"workflows"`
	Health    string       `json:"health"`
	Login     string       `json:"login,omitempty"` // when credentials are configured
	Routes    []indexRoute `json:"routes"`
}

// indexTemplate is the HTML body of GET /.
var indexTemplate = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>forgeq</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
code { font-size: .9rem; }
td { padding: .2rem .8rem .2rem 0; vertical-align: top; }
</style>
</head>
<body>
<h1>forgeq</h1>
<p><a href="{{.Dashboard}}">Dashboard</a> (queues and tasks) · <a href="{{.Workflows}}">Workflows</a> (chains and groups){{if .Login}} · <a href="{{.Login}}">Log in</a>{{end}} · <a href="{{.Health}}">Readiness</a></p>
<table>
{{range .Routes}}<tr><td><code>{{.Method}}</code></td><td><code>{{.Path}}</code></td><td>{{.Description}}</td></tr>
{{end}}</table>
</body>
</html>
`))

// indexCSP is the Content-Security-Policy of the index page: nothing but
// its own inline style.
const indexCSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"

// indexData returns what GET / shows.
func (s *Server) indexData() indexBody {
	b := indexBody{Name: "forgeq", Dashboard: dashboardRoot + "/", Workflows: workflowsPage, Health: "/health/ready"}
	if s.auth != nil {
		b.Login = "/login"
	}
	b.Routes = []indexRoute{
		{"GET", dashboardRoot + "/", "the asynqmon dashboard; its API under " + dashboardRoot + "/api/"},
		{"GET", "/health/live", "200 while the server serves"},
		{"GET", "/health/ready", "200 when Redis and the worker are up"},
		{"GET", "/health/redis", "200 when Redis answers"},
		{"GET", "/api/cache/{key}?work=N", "the cached value of key, computed and cached when missing"},
		{"POST", "/api/tasks/{type}", `enqueue a task: {"payload": {...}}`},
		{"GET", "/api/tasks/{queue}/{id}", "a task's state and result"},
		{"GET", "/api/tasks/{queue}/{id}/events", "a task's events as they happen (Server-Sent Events; resumes with Last-Event-ID)"},
		{"DELETE", "/api/tasks/{queue}/{id}", "cancel a task: removed from its queue, or stopped where it runs"},
		{"GET", "/api/task-types", "the task types that can be enqueued"},
		{"POST", workflowsPath, `submit a workflow: {"workflow": {"chain": [...]}}`},
		{"GET", workflowsPath + "?limit=N", "the recent workflows"},
		{"GET", workflowsPath + "/{id}?offset=N&limit=N", "a workflow's state and a page of its steps"},
		{"DELETE", workflowsPath + "/{id}", "cancel a workflow"},
		{"GET", workflowsPage, "the workflows page: recent workflows, each with its steps' progress"},
		{"GET", tasksPage + "/{queue}/{id}", "a task's page: its state, progress and result, live"},
		{"GET", schedulesPath, "the periodic entries stored in Redis, with their next and previous ticks"},
		{"PUT", schedulesPath + "/{name}", `add or replace a periodic entry: {"spec", "type", "payload", "queue", "paused"}`},
		{"POST", schedulesPath + "/{name}/pause", "pause a stored periodic entry (/resume resumes it)"},
		{"DELETE", schedulesPath + "/{name}", "remove a stored periodic entry"},
	}
	if s.auth != nil {
		b.Routes = append(b.Routes,
			indexRoute{"POST", "/login", "start a session: {username, password}"},
			indexRoute{"POST", "/logout", "end the session"})
	}
	if s.o.Metrics != nil {
		b.Routes = append(b.Routes, indexRoute{"GET", "/metrics", "Prometheus metrics"})
	}
	return b
}

// index serves GET /: a page pointing to the dashboard, the workflows
// page, the API routes and the readiness check; JSON for clients that
// prefer it.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	data := s.indexData()
	if prefersJSON(r) {
		writeJSON(w, http.StatusOK, data)
		return
	}
	var buf bytes.Buffer
	if err := indexTemplate.Execute(&buf, data); err != nil {
		// Unreachable: the template and its data are fixed.
		fail(w, r, http.StatusInternalServerError, codeInternal, "render index page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", indexCSP)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// prefersJSON reports whether the Accept header of r ranks
// application/json above text/html; wildcards count for HTML.
func prefersJSON(r *http.Request) bool {
	var jsonQ, htmlQ float64
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if p, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(p, 64); err != nil {
					continue
				}
			}
			switch {
			case isJSONType(mt):
				jsonQ = max(jsonQ, q)
			case mt == "text/html", mt == "text/*", mt == "*/*":
				htmlQ = max(htmlQ, q)
			}
		}
	}
	return jsonQ > htmlQ
}

// handleIndex registers index at GET / unless a route of the program
// already serves GET /.
func (s *Server) handleIndex(mux *http.ServeMux) {
	probe := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Host: "localhost", Header: http.Header{}}
	if _, pattern := mux.Handler(probe); pattern != "" {
		return
	}
	mux.HandleFunc("GET /{$}", s.index)
}

// dashboardURL returns the address of the dashboard of a server listening
// on addr, for the log: an unspecified host (every interface) becomes
// localhost.
func dashboardURL(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("localhost", port)
		}
	}
	return "http://" + addr + dashboardRoot + "/"
}
