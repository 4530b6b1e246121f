package cachemgr

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Sessions are JSON values under KeyPrefix + "session:" + id
// ("cache:session:<id>" with the default prefix), so DeletePattern("*")
// ends every session along with the cache, and DeletePattern("session:*")
// ends only the sessions.
//
// A session id is a bearer credential. It is 32 bytes from crypto/rand
// (256 bits) in unpadded base64url, 43 characters, safe in cookies and URLs.
// Ids of any other shape are rejected before they reach Redis, and no error
// or log line ever contains an id.

const (
	sessionInfix    = "session:"
	sessionIDBytes  = 32
	sessionIDLen    = 43 // base64.RawURLEncoding.EncodedLen(sessionIDBytes)
	sessionAttempts = 3  // ids tried by CreateSession before it gives up
)

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// CreateSession stores the JSON encoding of data as a new session that
// expires after ttl (0: Options.DefaultTTL, NoExpiry: never) and returns its
// id. The session is written with SET NX, so it can never overwrite another
// one; a colliding id (about as likely as guessing a 256-bit key) is
// replaced by a fresh one.
//
// Errors wrap ErrInvalidArgument when data cannot be marshalled or ttl is
// negative or below 1ms. Other errors: ErrClosed, Redis errors. It is safe
// for concurrent use.
func (m *Manager) CreateSession(ctx context.Context, data any, ttl time.Duration) (id string, err error) {
	defer m.stats.took(OpSession, time.Now())
	id, err = m.createSession(ctx, data, ttl)
	m.stats.record(OpSession, err)
	return id, err
}

func (m *Manager) createSession(ctx context.Context, data any, ttl time.Duration) (string, error) {
	if err := m.closedErr(); err != nil {
		return "", err
	}
	exp, err := m.expiry(ttl)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("cachemgr: create session: %w: marshal %T: %w", ErrInvalidArgument, data, err)
	}
	for range sessionAttempts {
		id := newSessionID()
		rctx := m.roundTrip(ctx)
		ok, err := m.rdb.SetNX(rctx, m.sessionKey(id), b, exp).Result()
		if err != nil {
			return "", m.wrap("create session", "", err)
		}
		if ok {
			return id, nil
		}
	}
	return "", fmt.Errorf("cachemgr: create session: %d random ids in a row were taken", sessionAttempts)
}

// GetSession decodes the data of session id into dst, which must be a
// non-nil pointer. It does not change the session's expiry; TouchSession
// does.
//
// It returns ErrMiss when the session does not exist or has expired, an
// error wrapping ErrDecode when its data does not decode into dst, and an
// error wrapping ErrInvalidArgument for a malformed id or a bad dst (then
// Redis is not asked). Other errors: ErrClosed, Redis errors. It is safe
// for concurrent use.
func (m *Manager) GetSession(ctx context.Context, id string, dst any) error {
	defer m.stats.took(OpSession, time.Now())
	err := m.readSession(ctx, "get session", id, dst, false, 0)
	m.stats.read(OpSession, err)
	return err
}

// TouchSession is GetSession that also resets the session's expiry to ttl
// (0: Options.DefaultTTL, NoExpiry: never), in one round trip (GETEX). It is
// the usual call on each request of a sliding-expiry session: a session in
// use stays alive, an idle one expires ttl after its last use.
//
// Errors are GetSession's, plus ErrInvalidArgument for a negative TTL or
// one below 1ms. The expiry is reset even when the data does not decode. It
// is safe for concurrent use.
func (m *Manager) TouchSession(ctx context.Context, id string, dst any, ttl time.Duration) error {
	defer m.stats.took(OpSession, time.Now())
	err := m.readSession(ctx, "touch session", id, dst, true, ttl)
	m.stats.read(OpSession, err)
	return err
}

func (m *Manager) readSession(ctx context.Context, op, id string, dst any, slide bool, ttl time.Duration) error {
	if err := m.closedErr(); err != nil {
		return err
	}
	if err := checkSessionID(id); err != nil {
		return err
	}
	if v := reflect.ValueOf(dst); v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("%w: session destination %T is not a non-nil pointer", ErrInvalidArgument, dst)
	}
	var (
		s   string
		err error
	)
	ctx = m.roundTrip(ctx)
	if slide {
		var exp time.Duration
		if exp, err = m.expiry(ttl); err != nil {
			return err
		}
		// exp == 0 (NoExpiry) makes go-redis send GETEX ... PERSIST.
		s, err = m.rdb.GetEx(ctx, m.sessionKey(id), exp).Result()
	} else {
		s, err = m.rdb.Get(ctx, m.sessionKey(id)).Result()
	}
	if err != nil {
		return m.wrap(op, "", err)
	}
	if err := json.Unmarshal([]byte(s), dst); err != nil {
		return fmt.Errorf("%w session into %T: %w", ErrDecode, dst, err)
	}
	return nil
}

// RefreshSession resets the expiry of session id to ttl (0:
// Options.DefaultTTL, NoExpiry: never) without reading it: sliding expiry
// for callers that do not need the data. It returns ErrMiss when the
// session does not exist or has expired, and errors wrapping
// ErrInvalidArgument for a malformed id or a bad TTL. Other errors:
// ErrClosed, Redis errors. It is safe for concurrent use.
func (m *Manager) RefreshSession(ctx context.Context, id string, ttl time.Duration) error {
	defer m.stats.took(OpSession, time.Now())
	err := m.refreshSession(ctx, id, ttl)
	m.stats.record(OpSession, err)
	return err
}

func (m *Manager) refreshSession(ctx context.Context, id string, ttl time.Duration) error {
	if err := m.closedErr(); err != nil {
		return err
	}
	if err := checkSessionID(id); err != nil {
		return err
	}
	exp, err := m.expiry(ttl)
	if err != nil {
		return err
	}
	ctx = m.roundTrip(ctx)
	if exp == 0 {
		// PERSIST cannot tell a missing key from one without expiry;
		// GETEX ... PERSIST can.
		return m.wrap("refresh session", "", m.rdb.GetEx(ctx, m.sessionKey(id), 0).Err())
	}
	ok, err := m.rdb.PExpire(ctx, m.sessionKey(id), exp).Result()
	if err != nil {
		return m.wrap("refresh session", "", err)
	}
	if !ok {
		return ErrMiss
	}
	return nil
}

// DeleteSession ends session id. Deleting a session that does not exist is
// not an error. It returns an error wrapping ErrInvalidArgument for a
// malformed id; other errors: ErrClosed, Redis errors. It is safe for
// concurrent use.
func (m *Manager) DeleteSession(ctx context.Context, id string) error {
	defer m.stats.took(OpSession, time.Now())
	err := m.closedErr()
	if err == nil {
		err = checkSessionID(id)
	}
	if err == nil {
		ctx := m.roundTrip(ctx)
		err = m.wrap("delete session", "", m.rdb.Unlink(ctx, m.sessionKey(id)).Err())
	}
	m.stats.record(OpSession, err)
	return err
}

func (m *Manager) sessionKey(id string) string { return m.prefix + sessionInfix + id }

func newSessionID() string {
	var b [sessionIDBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// checkSessionID accepts exactly the ids newSessionID makes: 43 base64url
// characters whose last one has its two padding bits clear. The error
// never repeats the id.
func checkSessionID(id string) error {
	if len(id) != sessionIDLen {
		return fmt.Errorf("%w: session id is %d bytes long, want %d", ErrInvalidArgument, len(id), sessionIDLen)
	}
	for i := range len(id) {
		if strings.IndexByte(base64URLAlphabet, id[i]) < 0 {
			return fmt.Errorf("%w: session id has a non-base64url byte at offset %d", ErrInvalidArgument, i)
		}
	}
	// 43 characters carry 258 bits; the last 2 are zero in a canonical
	// encoding of 32 bytes.
	if strings.IndexByte(base64URLAlphabet, id[sessionIDLen-1])&3 != 0 {
		return fmt.Errorf("%w: session id is not a canonical encoding of %d bytes", ErrInvalidArgument, sessionIDBytes)
	}
	return nil
}
