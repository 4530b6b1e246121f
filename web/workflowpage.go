package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/workflow"
)

// workflowsPage is the path of the workflows page; a workflow's page is
// at workflowsPage/{id}.
const workflowsPage = "/workflows"

// pageRefresh is how often, in seconds, a page showing a workflow that
// has not finished reloads itself.
const pageRefresh = 2

// workflowTemplates are the workflows pages: the list of recent
// workflows, one workflow with its steps, and an error. html/template
// escapes every value (names, step errors and progress messages are
// whatever their submitters and handlers wrote).
var workflowTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"whenPtr": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"percent": func(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) + "%" },
	"path":    func(id string) string { return workflowsPage + "/" + url.PathEscape(id) },
	// taskPath is the page of a step's task (taskpage.go).
	"taskPath": taskPageURL,
}).Parse(`{{define "head"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">
{{end}}<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
nav { margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .8rem .3rem 0; border-bottom: 1px solid #ddd; vertical-align: top; }
code { font-size: .9rem; }
progress { width: 24rem; height: 1.2rem; }
.status-succeeded { color: #1b7f3b; }
.status-failed { color: #b00020; }
.status-cancelled { color: #8a6d00; }
.status-running, .status-active { color: #1a5fb4; }
.status-pending, .status-waiting { color: #666; }
.error { color: #b00020; white-space: pre-wrap; }
.notice { background: #fff4ce; padding: .5rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
</style>
</head>
<body>
<nav><a href="/">forgeq</a> · <a href="/monitoring/">Dashboard</a> · <a href="/workflows">Workflows</a></nav>
{{end}}

{{define "list"}}{{template "head" .}}<h1>Workflows</h1>
{{if .Workflows}}<table id="workflows">
<thead><tr><th>ID</th><th>Name</th><th>Status</th><th>Done</th><th>Failed</th><th>Created</th></tr></thead>
<tbody>
{{range .Workflows}}<tr data-id="{{.ID}}"><td><a href="{{path .ID}}"><code>{{.ID}}</code></a></td><td>{{.Name}}</td><td class="status-{{.Status}}">{{.Status}}</td><td>{{.Done}}/{{.Total}}</td><td>{{.Failed}}</td><td>{{when .Created}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No workflows yet: submit one with POST /api/workflows or the enqueue command's --workflow.</p>
{{end}}</body>
</html>
{{end}}

{{define "workflow"}}{{template "head" .}}{{with .W}}<h1>Workflow <code>{{.ID}}</code>{{if .Name}}: {{.Name}}{{end}}</h1>
{{if $.Notice}}<p class="notice" role="status">{{$.Notice}}</p>
{{end}}<dl>
<dt>Status</dt><dd><span id="status" class="status-{{.Status}}">{{.Status}}</span></dd>
<dt>Progress</dt><dd><progress id="progress" value="{{.Done}}" max="{{.Total}}">{{.Done}}/{{.Total}}</progress> <span id="done">{{.Done}}/{{.Total}}</span> ({{percent .Percent}}){{if .Failed}}, {{.Failed}} failed{{end}}</dd>
{{if .FailedStep}}<dt>Failed step</dt><dd><code>{{.FailedStep}}</code></dd>
{{end}}{{if .Error}}<dt>Error</dt><dd class="error" id="error">{{.Error}}</dd>
{{end}}<dt>Created</dt><dd>{{when .Created}}</dd>
{{if .Started}}<dt>Started</dt><dd>{{whenPtr .Started}}</dd>
{{end}}{{if .Finished}}<dt>Finished</dt><dd>{{whenPtr .Finished}}</dd>
{{end}}<dt>JSON</dt><dd><a href="{{.StatusURL}}">{{.StatusURL}}</a></dd>
</dl>
{{if not $.Final}}<form method="post" action="{{path .ID}}/cancel"><button type="submit" id="cancel">Cancel workflow</button></form>
{{end}}<h2>Steps</h2>
<p>{{if $.Steps}}Steps {{$.From}}–{{$.To}} of {{.StepsTotal}}{{else}}No steps on this page ({{.StepsTotal}} in all){{end}}{{if $.Prev}} · <a href="{{$.Prev}}">previous</a>{{end}}{{if $.Next}} · <a href="{{$.Next}}">next</a>{{end}}</p>
{{if $.Steps}}<table id="steps">
<thead><tr><th>Path</th><th>Type</th><th>Queue</th><th>Status</th><th>Error</th><th>Progress</th></tr></thead>
<tbody>
{{range $.Steps}}<tr data-path="{{.Path}}" data-status="{{.Status}}"><td>{{if and .TaskID (ne .Status "waiting")}}<a href="{{taskPath .Queue .TaskID}}"><code>{{.Path}}</code></a>{{else}}<code>{{.Path}}</code>{{end}}</td><td><code>{{.Type}}</code></td><td>{{.Queue}}</td><td class="status-{{.Status}}">{{.Status}}</td><td class="error">{{.Error}}</td><td>{{with .Progress}}{{percent .Percent}}{{if .Message}} {{.Message}}{{end}}{{end}}</td></tr>
{{end}}</tbody>
</table>
{{end}}{{end}}</body>
</html>
{{end}}

{{define "error"}}{{template "head" .}}<h1>{{.Title}}</h1>
<p class="error" role="alert">{{.Message}}</p>
</body>
</html>
{{end}}`))

// workflowsCSP is the Content-Security-Policy of the workflows pages:
// their own inline style and forms posting to this server, no script.
const workflowsCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// page guards the workflows pages as the dashboard is guarded: when
// credentials are configured, a GET without a valid session or basic
// auth is sent to the login page, any other method is refused (401).
func (s *Server) page(next http.Handler) http.Handler {
	if s.auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.identify(r); err != nil {
			safe := r.Method == http.MethodGet || r.Method == http.MethodHead
			if !safe || errors.Is(err, errAuthUnavailable) {
				s.refuse(w, r, err, false)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// workflowsPage lists the recent workflows, newest first, each linking
// to its page; it reloads itself while one of them has not finished.
func (s *Server) workflowsPage(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r.URL.Query(), "limit", DefaultWorkflowList, 1, MaxWorkflowList)
	if err != nil {
		s.renderPageError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	list, err := s.recentWorkflows(r.Context(), limit)
	if err != nil {
		s.pageUnavailable(w, r, err)
		return
	}
	data := struct {
		Title     string
		Refresh   int
		Workflows []workflowBody
	}{Title: "forgeq: workflows", Workflows: list}
	for _, wf := range list {
		if !wf.Status.Final() {
			data.Refresh = pageRefresh
			break
		}
	}
	s.renderPage(w, r, http.StatusOK, "list", data)
}

// workflowPageData is what the page of one workflow shows.
type workflowPageData struct {
	Title   string
	Refresh int // reload after this many seconds; 0: never (final)
	W       workflowDetail
	Steps   []workflow.Step
	Final   bool
	// From and To number the steps shown (from 1); Prev and Next link
	// to the pages of steps before and after them.
	From, To   int
	Prev, Next string
	Notice     string
}

// workflowPage shows one workflow: its state, a progress bar and a page
// of its steps (?offset=, ?limit=), with a Cancel button until it has
// finished, and reloads itself until then.
func (s *Server) workflowPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, err := queryInt(q, "offset", 0, 0, workflow.MaxTasks)
	limit := DefaultStepPage
	if err == nil {
		limit, err = queryInt(q, "limit", DefaultStepPage, 1, MaxStepPage)
	}
	if err != nil {
		s.renderPageError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	d, err := s.readWorkflow(r.Context(), r.PathValue("id"), offset, limit)
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		s.renderPageError(w, r, http.StatusNotFound,
			fmt.Sprintf("No workflow %q: it never existed, or its retention ran out.", r.PathValue("id")))
		return
	case err != nil:
		s.pageUnavailable(w, r, err)
		return
	}
	data := workflowPageData{Title: "forgeq: workflow " + d.ID, W: d, Steps: d.Steps, Final: d.Status.Final()}
	if !data.Final {
		data.Refresh = pageRefresh
	}
	if len(d.Steps) > 0 {
		data.From, data.To = offset+1, offset+len(d.Steps)
	}
	here := workflowsPage + "/" + url.PathEscape(d.ID)
	if offset > 0 {
		data.Prev = fmt.Sprintf("%s?offset=%d&limit=%d", here, max(0, offset-limit), limit)
	}
	if offset+len(d.Steps) < d.StepsTotal {
		data.Next = fmt.Sprintf("%s?offset=%d&limit=%d", here, offset+limit, limit)
	}
	s.renderPage(w, r, http.StatusOK, "workflow", data)
}

// cancelFromPage is the Cancel button of a workflow's page: it cancels
// the workflow and sends the browser back to its page (303), which shows
// it cancelled, or finished if it finished first.
func (s *Server) cancelFromPage(w http.ResponseWriter, r *http.Request) {
	_, err := s.cancel(r)
	switch {
	case err == nil, errors.Is(err, workflow.ErrFinished):
		http.Redirect(w, r, workflowsPage+"/"+url.PathEscape(r.PathValue("id")), http.StatusSeeOther)
	case errors.Is(err, workflow.ErrNotFound):
		s.renderPageError(w, r, http.StatusNotFound,
			fmt.Sprintf("No workflow %q: it never existed, or its retention ran out.", r.PathValue("id")))
	default:
		s.pageUnavailable(w, r, err)
	}
}

// pageUnavailable is unavailable for the pages: the error is logged, the
// browser gets a page saying Redis cannot be reached.
func (s *Server) pageUnavailable(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() == nil {
		s.log.Warn("http dependency failed", zap.String("request_id", stateOf(r).id),
			zap.String("dependency", "workflow store"), zap.Error(err))
	}
	s.renderPageError(w, r, http.StatusServiceUnavailable, "The workflow store (Redis) cannot be reached: try again shortly.")
}

// renderPageError writes the error page with status and message.
func (s *Server) renderPageError(w http.ResponseWriter, r *http.Request, status int, message string) {
	s.renderPage(w, r, status, "error", struct {
		Title   string
		Refresh int
		Message string
	}{Title: http.StatusText(status), Message: message})
}

// renderPage writes the template name of workflowTemplates with data.
func (s *Server) renderPage(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := workflowTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		// Unreachable: the templates and their data are fixed.
		fail(w, r, http.StatusInternalServerError, codeInternal, "render workflows page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", workflowsCSP)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
