package web_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestWorkflowPages checks the /workflows pages of a workflow that has
// not finished: listed with a link to its page, which shows its steps, a
// progress bar and a Cancel button, both reloading themselves; every
// value escaped; then the Cancel button's post, after which the page
// shows it cancelled, without the button and without reloading.
func TestWorkflowPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const evil = `<script>alert("x")</script>`
	got := submitWorkflow(t, b.ts.URL, req{}, `{"id":"page-1","name":"`+strings.ReplaceAll(evil, `"`, `\"`)+`","workflow":{"chain":[
		{"type":"data:process","payload":{"key":"k","work":1}},
		{"group":[{"type":"data:process","payload":{"key":"a","work":1}}],"callback":{"type":"cache:warm","payload":{"keys":["a"],"work":1}}}]}}`)

	list := b.page(t, "/workflows", http.StatusOK)
	for _, want := range []string{
		`<a href="/workflows/page-1"><code>page-1</code></a>`,
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`class="status-pending">pending<`,
		`<td>0/3</td>`,
		`<meta http-equiv="refresh" content="2">`,
	} {
		if !strings.Contains(list, want) {
			t.Errorf("GET /workflows lacks %s:\n%s", want, list)
		}
	}
	if strings.Contains(list, evil) {
		t.Errorf("GET /workflows shows the name unescaped:\n%s", list)
	}

	page := b.page(t, "/workflows/page-1", http.StatusOK)
	for _, want := range []string{
		`<span id="status" class="status-pending">pending</span>`,
		`<progress id="progress" value="0" max="3">`,
		`<tr data-path="0" data-status="active"><td><a href="/tasks/default/wf:page-1:0"><code>0</code></a>`, // the step's task page
		`<tr data-path="1.m0" data-status="waiting"><td><code>1.m0</code></td>`,                              // no task yet
		`<tr data-path="1.cb" data-status="waiting">`,
		`<form method="post" action="/workflows/page-1/cancel">`,
		`<meta http-equiv="refresh" content="2">`,
		`href="` + got.StatusURL + `"`,
		"Steps 1–3 of 3",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("GET /workflows/page-1 lacks %s:\n%s", want, page)
		}
	}
	if strings.Contains(page, evil) {
		t.Errorf("GET /workflows/page-1 shows the name unescaped:\n%s", page)
	}
	if paged := b.page(t, "/workflows/page-1?offset=1&limit=1", http.StatusOK); !strings.Contains(paged, `data-path="1.m0"`) ||
		strings.Contains(paged, `data-path="0"`) || !strings.Contains(paged, `href="/workflows/page-1?offset=0&amp;limit=1">previous`) ||
		!strings.Contains(paged, `href="/workflows/page-1?offset=2&amp;limit=1">next`) {
		t.Errorf("GET /workflows/page-1?offset=1&limit=1: want step 1.m0 with previous and next links:\n%s", paged)
	}

	resp := b.send(t, req{Method: http.MethodPost, Path: "/workflows/page-1/cancel", Header: map[string]string{"Sec-Fetch-Site": "same-origin"}})
	if resp.Status != http.StatusSeeOther || resp.Header.Get("Location") != "/workflows/page-1" {
		t.Fatalf("POST /workflows/page-1/cancel: %d to %q, want 303 to the page", resp.Status, resp.Header.Get("Location"))
	}
	page = b.page(t, "/workflows/page-1", http.StatusOK)
	for _, want := range []string{`class="status-cancelled">cancelled</span>`, `<tr data-path="0" data-status="cancelled">`, "cancelled over HTTP"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page after Cancel lacks %s:\n%s", want, page)
		}
	}
	for _, unwanted := range []string{`http-equiv="refresh"`, `id="cancel"`} {
		if strings.Contains(page, unwanted) {
			t.Errorf("the page of a cancelled workflow has %s:\n%s", unwanted, page)
		}
	}
	// Cancelling it again is no error: the page shows it finished.
	resp = b.send(t, req{Method: http.MethodPost, Path: "/workflows/page-1/cancel"})
	if resp.Status != http.StatusSeeOther {
		t.Errorf("a second cancel from the page: status %d, want 303: %s", resp.Status, resp.Body)
	}
}

func TestWorkflowPageErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if page := b.page(t, "/workflows", http.StatusOK); !strings.Contains(page, "No workflows yet") || strings.Contains(page, "refresh") {
		t.Errorf("GET /workflows without workflows:\n%s", page)
	}
	if page := b.page(t, "/workflows/%3Cb%3Enope", http.StatusNotFound); !strings.Contains(page, `No workflow &#34;&lt;b&gt;nope&#34;`) {
		t.Errorf("GET /workflows/<b>nope: want a 404 page naming it, escaped:\n%s", page)
	}
	if page := b.page(t, "/workflows/x?limit=0", http.StatusBadRequest); !strings.Contains(page, `limit &#34;0&#34;`) {
		t.Errorf("GET /workflows/x?limit=0: want a 400 page naming limit:\n%s", page)
	}
	resp := b.send(t, req{Method: http.MethodPost, Path: "/workflows/nope/cancel"})
	if resp.Status != http.StatusNotFound {
		t.Errorf("POST /workflows/nope/cancel: status %d, want 404", resp.Status)
	}
}

func TestIndexLinksWorkflows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	page := b.page(t, "/", http.StatusOK)
	for _, want := range []string{`<a href="/workflows">Workflows</a>`, "/api/workflows"} {
		if !strings.Contains(page, want) {
			t.Errorf("the index lacks %s:\n%s", want, page)
		}
	}
}

// page reads the HTML page at path, wanting status, and returns it.
func (b *testBundle) page(tb testing.TB, path string, status int) string {
	tb.Helper()
	resp := b.send(tb, req{Path: path})
	if resp.Status != status {
		tb.Fatalf("GET %s: status %d, want %d: %s", path, resp.Status, status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		tb.Errorf("GET %s: Content-Type %q, want HTML", path, ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		tb.Errorf("GET %s: Content-Security-Policy %q, want default-src 'none'", path, csp)
	}
	return string(resp.Body)
}
