package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"go.uber.org/zap"
)

// tasksPage begins the path of a task's page: tasksPage/{queue}/{id}.
const tasksPage = "/tasks"

// taskPageScript follows the task on its page: it opens an EventSource on
// the task's event stream (the URL in #task's data-events) and shows each
// event as it comes, until the stream ends. It is the page's only script;
// the Content-Security-Policy allows it by its hash.
const taskPageScript = `
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("task");
  const finalStates = ["completed", "archived"];
  const setState = (st) => {
    $("state").textContent = st;
    $("state").className = "status-" + st;
    root.dataset.state = st;
  };
  const setProgress = (percent, message) => {
    const p = Math.max(0, Math.min(100, Number(percent) || 0));
    $("progress").value = p;
    $("percent").textContent = Math.round(p) + "%";
    $("message").textContent = message || "";
  };
  const show = (id, text) => {
    $(id).textContent = text;
    $(id + "-row").hidden = text === "";
  };
  const resultText = (d) => {
    if (d.result !== undefined) return JSON.stringify(d.result, null, 2);
    if (d.result_text !== undefined) return d.result_text;
    if (d.result_base64 !== undefined) return "(binary, base64) " + d.result_base64;
    return "";
  };
  const log = (name, d) => {
    const li = document.createElement("li");
    li.dataset.kind = name;
    const when = d.time ? new Date(d.time).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
    let detail = "";
    if (name === "progress") detail = Math.round(d.percent || 0) + "%" + (d.message ? " " + d.message : "");
    else if (d.error) detail = d.error;
    else if (name === "state") detail = d.state;
    li.textContent = [when, name, detail].filter((s) => s).join(" · ");
    const list = $("events");
    list.append(li);
    while (list.children.length > 100) list.firstElementChild.remove();
  };
  const es = new EventSource(root.dataset.events);
  const live = (text) => { $("live").textContent = text; root.dataset.live = text; };
  const end = () => { es.close(); live("ended"); };
  es.onopen = () => live("live");
  es.onerror = () => live(es.readyState === EventSource.CLOSED ? "ended" : "reconnecting");
  es.addEventListener("state", (m) => {
    const d = JSON.parse(m.data);
    log("state", d);
    setState(d.state);
    if (d.progress) setProgress(d.progress.percent, d.progress.message);
    if (d.retried) $("attempt").textContent = String(d.retried + 1);
    show("error", d.last_error || "");
    if (d.result !== undefined) show("result", JSON.stringify(d.result, null, 2));
    if (finalStates.includes(d.state)) end();
  });
  const kinds = {
    enqueued: "pending", started: "active", progress: "active", failed: "",
    retried: "retry", succeeded: "completed", archived: "archived", cancelled: "cancelled",
  };
  for (const [kind, st] of Object.entries(kinds)) {
    es.addEventListener(kind, (m) => {
      const d = JSON.parse(m.data);
      log(kind, d);
      if (st) setState(st);
      if (d.attempt) $("attempt").textContent = String(d.attempt);
      if (kind === "progress") setProgress(d.percent, d.message);
      if (kind === "started") show("error", "");
      if (d.error) show("error", d.error);
      if (kind === "succeeded") {
        setProgress(100, $("message").textContent);
        show("result", resultText(d) + (d.result_truncated ? "\n(truncated)" : ""));
      }
      if (kind === "succeeded" || kind === "archived" || kind === "cancelled") end();
    });
  }
})();
`

// taskPageCSP is the Content-Security-Policy of a task's page: its own
// inline style, its one script (by hash) and connections to this server.
var taskPageCSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-" + scriptHash(taskPageScript) +
	"'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// scriptHash returns the base64 SHA-256 of an inline script, as a CSP
// source names it.
func scriptHash(js string) string {
	sum := sha256.Sum256([]byte(js))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// taskTemplates are the task page, on the head of the workflows pages.
var taskTemplates = template.Must(template.Must(workflowTemplates.Clone()).Funcs(template.FuncMap{
	"add": func(a, b int) int { return a + b },
}).Parse(`{{define "task"}}{{template "head" .}}<style>
dl > div:not([hidden]) { display: contents; }
pre { margin: 0; }
.status-completed { color: #1b7f3b; }
.status-archived { color: #b00020; }
.status-retry { color: #8a6d00; }
</style>
{{with .T}}<h1>Task <code>{{.ID}}</code></h1>
<dl id="task" data-events="{{$.EventsURL}}" data-state="{{.State}}" data-live="connecting">
<div><dt>Type</dt><dd><code id="type">{{.Type}}</code></dd></div>
<div><dt>Queue</dt><dd><code>{{.Queue}}</code></dd></div>
<div><dt>State</dt><dd><span id="state" class="status-{{.State}}">{{.State}}</span></dd></div>
<div><dt>Attempt</dt><dd id="attempt">{{add .Retried 1}}</dd></div>
<div><dt>Progress</dt><dd><progress id="progress" value="{{$.Percent}}" max="100"></progress> <span id="percent">{{printf "%.0f" $.Percent}}%</span> <span id="message">{{$.Message}}</span></dd></div>
<div id="error-row"{{if not .LastError}} hidden{{end}}><dt>Error</dt><dd class="error" id="error">{{.LastError}}</dd></div>
<div id="result-row"{{if not .Result}} hidden{{end}}><dt>Result</dt><dd><pre id="result">{{printf "%s" .Result}}</pre></dd></div>
<div><dt>Live</dt><dd id="live">connecting</dd></div>
<div><dt>JSON</dt><dd><a href="{{$.StatusURL}}">{{$.StatusURL}}</a> · events: <a href="{{$.EventsURL}}">{{$.EventsURL}}</a></dd></div>
</dl>
<h2>Events</h2>
<ol id="events"></ol>
{{end}}<script>{{$.Script}}</script>
</body>
</html>
{{end}}`))

// taskPageData is what a task's page shows.
type taskPageData struct {
	Title     string
	Refresh   int // always 0: the page follows the task's events
	T         taskBody
	Percent   float64
	Message   string
	StatusURL string
	EventsURL string
	Script    template.JS
}

// taskPage shows one task: its state, a progress bar with the last
// progress message, its result or error, and the events as they come,
// which its script reads from GET /api/tasks/{queue}/{id}/events.
func (s *Server) taskPage(w http.ResponseWriter, r *http.Request) {
	queue, id := r.PathValue("queue"), r.PathValue("id")
	for _, v := range [...]struct{ field, value string }{{"queue", queue}, {"id", id}} {
		if err := checkRef(v.field, v.value); err != nil {
			s.renderPageError(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	body, err := s.readTask(r, queue, id)
	switch {
	case errors.Is(err, errNoTask):
		s.renderPageError(w, r, http.StatusNotFound,
			fmt.Sprintf("No task %q in queue %q: it never existed, or it finished and its retention ran out.", id, queue))
		return
	case err != nil:
		if r.Context().Err() == nil {
			s.log.Warn("http dependency failed", zap.String("request_id", stateOf(r).id),
				zap.String("dependency", "task queue"), zap.Error(err))
		}
		s.renderPageError(w, r, http.StatusServiceUnavailable, "The task queue (Redis) cannot be reached: try again shortly.")
		return
	}
	data := taskPageData{
		Title:     "forgeq: task " + id,
		T:         body,
		StatusURL: statusURL(queue, id),
		EventsURL: eventsURL(queue, id),
		Script:    template.JS(taskPageScript),
	}
	if body.Progress != nil {
		data.Percent, data.Message = body.Progress.Percent, body.Progress.Message
	}
	if body.State == "completed" {
		data.Percent = 100
	}
	var buf bytes.Buffer
	if err := taskTemplates.ExecuteTemplate(&buf, "task", data); err != nil {
		// Unreachable: the template and its data are fixed.
		fail(w, r, http.StatusInternalServerError, codeInternal, "render task page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", taskPageCSP)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// eventsURL is the path of GET /api/tasks/{queue}/{id}/events.
func eventsURL(queue, id string) string { return statusURL(queue, id) + "/events" }

// taskPageURL is the path of a task's page.
func taskPageURL(queue, id string) string {
	return tasksPage + "/" + url.PathEscape(queue) + "/" + url.PathEscape(id)
}
