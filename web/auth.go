package web

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
)

// SessionCookie is the name of the cookie that carries a session id. The
// cookie is HttpOnly, SameSite=Lax, Path=/, Secure per
// Options.CookieSecure, and has no expiry of its own: the session expires
// on the server, Options.SessionTTL after its last use.
const SessionCookie = "forgeq_session"

// authKeyPrefix begins the keys of the password-attempt limiter.
const authKeyPrefix = "web:auth:"

// credentials are the configured username and password, kept as SHA-256
// sums so that comparing them takes the same time whatever is given, and
// the binding of the sessions they make.
type credentials struct {
	user, pass [sha256.Size]byte
	// binding returns sessionBinding(user, pass), derived on first use:
	// the derivation is slow on purpose.
	binding func() string
}

func newCredentials(user, pass string) *credentials {
	return &credentials{
		user:    sha256.Sum256([]byte(user)),
		pass:    sha256.Sum256([]byte(pass)),
		binding: sync.OnceValue(func() string { return sessionBinding(user, pass) }),
	}
}

// bindingIterations is the PBKDF2 work of sessionBinding: about 20ms once
// per process, and as much per guess to anyone who reads a session's
// binding from Redis and tries to find the password from it.
const bindingIterations = 100_000

// bindingSalt begins the PBKDF2 salt of sessionBinding; the username
// follows.
const bindingSalt = "forgeq web session binding v1\x00"

// sessionBinding returns the binding of the sessions that user and pass
// make: the HMAC-SHA-256 of user keyed with a secret derived from pass
// (PBKDF2-HMAC-SHA-256), in unpadded base64url. Every process with the same
// credentials computes the same binding, and it changes with either of
// them. Neither the password nor the secret is kept or shown anywhere.
func sessionBinding(user, pass string) string {
	secret, err := pbkdf2.Key(sha256.New, pass, []byte(bindingSalt+user), bindingIterations, sha256.Size)
	if err != nil {
		// Only in FIPS 140-only mode, which refuses short passwords: then
		// no session is ever accepted.
		return ""
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// bound reports whether binding, from a session, is that of c's sessions.
func (c *credentials) bound(binding string) bool {
	want := c.binding()
	return want != "" && subtle.ConstantTimeCompare([]byte(binding), []byte(want)) == 1
}

// match compares user and pass with the configured ones in constant time.
func (c *credentials) match(user, pass string) bool {
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(u[:], c.user[:])&subtle.ConstantTimeCompare(p[:], c.pass[:]) == 1
}

// session is the data of a session in the manager's session store.
type session struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	// Binding is the sessionBinding of the credentials the session was
	// made with. A session whose binding is not that of the server's
	// credentials (changed since, or a session from before bindings) is
	// refused and deleted.
	Binding string `json:"binding"`
}

// The reasons a request is not authenticated; their text is the client's
// message.
var (
	errAuthRequired    = errors.New("authentication required: log in at /login or use HTTP basic auth")
	errBadSession      = errors.New("the session cookie is not valid: log in again")
	errExpiredSession  = errors.New("the session has expired or ended: log in again")
	errBadPassword     = errors.New("wrong username or password")
	errAuthUnavailable = errors.New("authentication is unavailable: the session store cannot be reached")
	errAuthDisabled    = errors.New("login is disabled: no credentials are configured")
)

// throttledError refuses a password attempt over Options.LoginLimit.
type throttledError struct{ retryAfter time.Duration }

func (e *throttledError) Error() string {
	return "too many login attempts: retry in " + seconds(e.retryAfter) + "s"
}

// identify returns the user r is authenticated as: by its session cookie
// (whose expiry it slides), else by HTTP basic auth. It asks Redis once per
// request, however often it is called. The error says why there is no
// user: errAuthRequired, errBadSession, errExpiredSession, errBadPassword,
// a *throttledError, errAuthUnavailable, or errAuthDisabled when no
// credentials are configured.
func (s *Server) identify(r *http.Request) (string, error) {
	st := stateOf(r)
	if !st.identified {
		st.identified = true
		st.user, st.authErr = s.authenticate(r)
	}
	return st.user, st.authErr
}

func (s *Server) authenticate(r *http.Request) (string, error) {
	if s.auth == nil {
		return "", errAuthDisabled
	}
	ctx := r.Context()
	why := errAuthRequired
	if c, err := r.Cookie(SessionCookie); err == nil {
		var sess session
		err := s.m.TouchSession(ctx, c.Value, &sess, s.o.SessionTTL)
		switch {
		case err == nil && sess.User == s.o.AuthUsername && s.auth.bound(sess.Binding):
			stateOf(r).bySession = true
			return sess.User, nil
		case err == nil:
			// Made with other credentials: they have changed since.
			s.endSession(ctx, r, c.Value)
			why = errExpiredSession
		case errors.Is(err, cachemgr.ErrInvalidArgument), errors.Is(err, cachemgr.ErrDecode):
			why = errBadSession
		case errors.Is(err, cachemgr.ErrMiss):
			why = errExpiredSession
		default:
			s.log.Warn("session check failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
			return "", errAuthUnavailable
		}
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if err := s.checkPassword(ctx, r, user, pass); err != nil {
			return "", err
		}
		return user, nil
	}
	return "", why
}

// recheck reports why r, a request that authenticate let through a
// while ago, would no longer be let through: nil while it would. Only a
// session can end while the server runs (a logout, its expiry, a
// deletion): a request authenticated by HTTP basic auth passes as long as
// the server's credentials, which never change while it runs, and every
// request passes when none are configured. It reads the session without
// sliding its expiry, so that a long request does not keep its session
// alive, and counts no password attempt. Errors: errExpiredSession,
// errBadSession, or errAuthUnavailable when Redis cannot tell.
func (s *Server) recheck(ctx context.Context, r *http.Request) error {
	if s.auth == nil || !stateOf(r).bySession {
		return nil
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return errBadSession // unreachable: the session came from this cookie
	}
	var sess session
	err = s.m.GetSession(ctx, c.Value, &sess)
	switch {
	case err == nil && sess.User == s.o.AuthUsername && s.auth.bound(sess.Binding):
		return nil
	case err == nil, errors.Is(err, cachemgr.ErrMiss):
		return errExpiredSession
	case errors.Is(err, cachemgr.ErrInvalidArgument), errors.Is(err, cachemgr.ErrDecode):
		return errBadSession
	}
	s.log.Debug("session recheck failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
	return errAuthUnavailable
}

// endSession deletes session id, which the request r showed, logging a
// failure: the session is refused either way.
func (s *Server) endSession(ctx context.Context, r *http.Request, id string) {
	if err := s.m.DeleteSession(ctx, id); err != nil {
		s.log.Warn("session delete failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
	}
}

// checkPassword checks user and pass, allowing Options.LoginLimit attempts
// per remote IP address. Every attempt counts, before the comparison, so
// that no answer tells a right password from a wrong one once the limit is
// reached, however many attempts run at once; a right password empties the
// count again. Errors: errBadPassword, *throttledError, errAuthUnavailable.
func (s *Server) checkPassword(ctx context.Context, r *http.Request, user, pass string) error {
	key := authKeyPrefix + s.clientIP(r)
	res, err := s.m.Allow(ctx, key, s.o.LoginLimit)
	if err != nil {
		s.log.Warn("login limit check failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
		return errAuthUnavailable
	}
	if !res.Allowed {
		return &throttledError{retryAfter: res.RetryAfter}
	}
	if !s.auth.match(user, pass) {
		s.log.Info("login failed", zap.String("request_id", stateOf(r).id), zap.String("remote_ip", s.clientIP(r)))
		return errBadPassword
	}
	// A lone success costs one attempt, refilled soon; more in a row
	// reset the count.
	if res.Remaining < res.Limit.Burst-1 {
		if err := s.m.ResetLimit(ctx, key); err != nil {
			s.log.Warn("login limit reset failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
		}
	}
	return nil
}

// requireAuth lets through only authenticated requests, when credentials
// are configured: every /api/ route (see api), and /metrics with
// Options.MetricsAuth.
func (s *Server) requireAuth(next http.Handler) http.Handler {
	if s.auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.identify(r); err != nil {
			s.refuse(w, r, err, true)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request identify refused: 429 with Retry-After when
// throttled, 503 when Redis is unreachable, else 401 (with a basic-auth
// challenge when challenge is set).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error, challenge bool) {
	var throttled *throttledError
	switch {
	case errors.As(err, &throttled):
		w.Header().Set("Retry-After", seconds(throttled.retryAfter))
		fail(w, r, http.StatusTooManyRequests, codeRateLimited, err.Error())
	case errors.Is(err, errAuthUnavailable):
		fail(w, r, http.StatusServiceUnavailable, codeUnavailable, err.Error())
	case errors.Is(err, errBadPassword):
		if challenge {
			w.Header().Set("WWW-Authenticate", `Basic realm="forgeq", charset="UTF-8"`)
		}
		fail(w, r, http.StatusUnauthorized, codeBadCredentials, err.Error())
	default:
		if challenge {
			w.Header().Set("WWW-Authenticate", `Basic realm="forgeq", charset="UTF-8"`)
		}
		fail(w, r, http.StatusUnauthorized, codeUnauthorized, err.Error())
	}
}

// loginRequest is the body of POST /login, as JSON or as a form.
type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Next     string `json:"next"` // forms only: where to go after logging in
}

// loginBody is the 200 body of a JSON POST /login.
type loginBody struct {
	User              string `json:"user"`
	SessionTTLSeconds int64  `json:"session_ttl_seconds"`
}

// isFormType reports whether mt is an HTML form's media type.
func isFormType(mt string) bool {
	return mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data"
}

// login checks the credentials of a JSON or form body and starts a session
// in the session cookie. A JSON login answers 200 with loginBody; a form
// login redirects (303) to its local "next" path, or shows the login page
// again with what went wrong.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	form := isFormType(mediaType(r))
	if form {
		if err := r.ParseMultipartForm(64 << 10); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge,
					fmt.Sprintf("the request body is over the %d-byte limit", tooLarge.Limit))
				return
			}
			fail(w, r, http.StatusBadRequest, codeBadRequest, "malformed form: "+err.Error())
			return
		}
		req = loginRequest{Username: r.PostFormValue("username"), Password: r.PostFormValue("password"), Next: r.PostFormValue("next")}
	} else if !decodeJSON(w, r, &req) {
		return
	}
	next := localPath(req.Next)

	err := errAuthDisabled
	if s.auth != nil {
		err = s.checkPassword(r.Context(), r, req.Username, req.Password)
	}
	switch {
	case err == nil:
	case form:
		s.renderLogin(w, r, statusOf(err), next, err.Error())
		return
	case errors.Is(err, errAuthDisabled):
		fail(w, r, http.StatusNotFound, codeNotFound, err.Error())
		return
	default:
		s.refuse(w, r, err, false)
		return
	}

	sess := session{User: req.Username, Created: time.Now().UTC(), Binding: s.auth.binding()}
	id, err := s.m.CreateSession(r.Context(), sess, s.o.SessionTTL)
	if err != nil {
		s.unavailable(w, r, "session store", err)
		return
	}
	stateOf(r).user = req.Username
	http.SetCookie(w, s.sessionCookie(id, 0))
	if form {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, loginBody{User: req.Username, SessionTTLSeconds: int64(s.o.SessionTTL / time.Second)})
}

// statusOf returns the status refuse would answer err with.
func statusOf(err error) int {
	var throttled *throttledError
	switch {
	case errors.As(err, &throttled):
		return http.StatusTooManyRequests
	case errors.Is(err, errAuthUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, errAuthDisabled):
		return http.StatusNotFound
	}
	return http.StatusUnauthorized
}

// logout ends the session of the cookie, if any, and clears the cookie. It
// needs no valid session: logging out twice is not an error. A form post
// is redirected (303) to the login page; anything else gets
// {"status":"logged_out"}.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		err := s.m.DeleteSession(r.Context(), c.Value)
		if err != nil && !errors.Is(err, cachemgr.ErrInvalidArgument) {
			s.unavailable(w, r, "session store", err)
			return
		}
	}
	http.SetCookie(w, s.sessionCookie("", -1))
	if isFormType(mediaType(r)) {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{"logged_out"})
}

// sessionCookie returns the session cookie holding id; maxAge -1 deletes it.
func (s *Server) sessionCookie(id string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     SessionCookie,
		Value:    id,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   s.o.CookieSecure,
		SameSite: http.SameSiteLaxMode,
	}
}

// localPath returns next when it is a path on this server, else the
// dashboard: never a redirect to another host ("//evil", "/\evil",
// "https://evil").
func localPath(next string) string {
	const fallback = dashboardRoot + "/"
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsFunc(next, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return fallback
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return fallback
	}
	return next
}
