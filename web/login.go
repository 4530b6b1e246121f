package web

import (
	"bytes"
	"html/template"
	"net/http"
)

// loginTemplate is the login page of the dashboard. It posts a form to
// POST /login, which redirects to next.
var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>forgeq: log in</title>
<style>
body { font-family: system-ui, sans-serif; background: #f4f5f7; display: flex; justify-content: center; margin-top: 12vh; }
form { background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); width: 18rem; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
label { display: block; margin: .8rem 0 .2rem; font-size: .9rem; }
input[type=text], input[type=password] { width: 100%; box-sizing: border-box; padding: .5rem; }
button { margin-top: 1.2rem; width: 100%; padding: .6rem; }
.error { color: #b00020; font-size: .9rem; }
</style>
</head>
<body>
<form method="post" action="/login">
<h1>forgeq</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
{{if .Disabled}}<p>Login is disabled: no credentials are configured, and nothing needs them. <a href="{{.Next}}">Continue</a>.</p>
{{else}}<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{{.Next}}">
<button type="submit">Log in</button>
{{end}}</form>
</body>
</html>
`))

// loginCSP is the Content-Security-Policy of the login page: nothing but
// its own inline style and a form posting to this server.
const loginCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// loginPage serves the login page; ?next= is where a successful login
// goes (local paths only; default the dashboard).
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, localPath(r.URL.Query().Get("next")), "")
}

// renderLogin writes the login page with status and an error message.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, next, message string) {
	var buf bytes.Buffer
	data := struct {
		Next, Error string
		Disabled    bool
	}{Next: next, Error: message, Disabled: s.auth == nil}
	if err := loginTemplate.Execute(&buf, data); err != nil {
		// Unreachable: the template and its data are fixed.
		fail(w, r, http.StatusInternalServerError, codeInternal, "render login page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", loginCSP)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
