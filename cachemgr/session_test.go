package cachemgr_test

import (
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

type sessionData struct {
	UserID    int64     `json:"user_id"`
	Roles     []string  `json:"roles"`
	CSRF      string    `json:"csrf"`
	LoggedIn  time.Time `json:"logged_in"`
	Remember  bool      `json:"remember"`
	Preferred *string   `json:"preferred,omitempty"`
}

func newSessionData() sessionData {
	lang := "en"
	return sessionData{
		UserID:    42,
		Roles:     []string{"admin", "editor"},
		CSRF:      "c5rf",
		LoggedIn:  time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		Remember:  true,
		Preferred: &lang,
	}
}

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func TestSessionRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	want := newSessionData()

	id, err := m.CreateSession(ctx, want, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key := m.Key("session:" + id)
	if got := mr.TTL(key); got != 30*time.Minute {
		t.Errorf("TTL after create = %v, want 30m", got)
	}

	var got sessionData
	if err := m.GetSession(ctx, id, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetSession (-want +got):\n%s", diff)
	}

	mr.FastForward(10 * time.Minute)
	if err := m.RefreshSession(ctx, id, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := mr.TTL(key); got != time.Hour {
		t.Errorf("TTL after refresh = %v, want 1h", got)
	}

	mr.FastForward(10 * time.Minute)
	got = sessionData{}
	if err := m.TouchSession(ctx, id, &got, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TouchSession (-want +got):\n%s", diff)
	}
	if got := mr.TTL(key); got != 2*time.Hour {
		t.Errorf("TTL after touch = %v, want 2h", got)
	}

	if err := m.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if mr.Exists(key) {
		t.Error("session key still exists after DeleteSession")
	}
	if err := m.GetSession(ctx, id, &got); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession after delete = %v, want ErrMiss", err)
	}
	if err := m.DeleteSession(ctx, id); err != nil {
		t.Errorf("second DeleteSession = %v, want nil", err)
	}

	wantStats := cachemgr.OpStats{Calls: 7, Hits: 2, Misses: 1}
	if diff := cmp.Diff(wantStats, m.Stats().Ops[cachemgr.OpSession], ignoreLatency); diff != "" {
		t.Errorf("session stats (-want +got):\n%s", diff)
	}
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	id, err := m.CreateSession(ctx, newSessionData(), 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	mr.FastForward(29 * time.Minute)
	var got sessionData
	if err := m.GetSession(ctx, id, &got); err != nil {
		t.Fatalf("GetSession before expiry = %v", err)
	}

	mr.FastForward(time.Minute)
	if err := m.GetSession(ctx, id, &got); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession = %v, want ErrMiss", err)
	}
	if err := m.TouchSession(ctx, id, &got, time.Hour); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("TouchSession = %v, want ErrMiss", err)
	}
	if err := m.RefreshSession(ctx, id, time.Hour); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("RefreshSession = %v, want ErrMiss", err)
	}
	if err := m.RefreshSession(ctx, id, cachemgr.NoExpiry); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("RefreshSession(NoExpiry) = %v, want ErrMiss", err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("keys = %v: refreshing an expired session recreated it", keys)
	}
}

func TestSessionSlidingExpiry(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Minute
	tests := []struct {
		name  string
		slide func(ctx context.Context, m *cachemgr.Manager, id string) error
	}{
		{"touch", func(ctx context.Context, m *cachemgr.Manager, id string) error {
			var got sessionData
			return m.TouchSession(ctx, id, &got, ttl)
		}},
		{"refresh", func(ctx context.Context, m *cachemgr.Manager, id string) error {
			return m.RefreshSession(ctx, id, ttl)
		}},
		{"touch with default TTL", func(ctx context.Context, m *cachemgr.Manager, id string) error {
			var got sessionData
			return m.TouchSession(ctx, id, &got, 0)
		}},
		{"refresh with default TTL", func(ctx context.Context, m *cachemgr.Manager, id string) error {
			return m.RefreshSession(ctx, id, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{DefaultTTL: ttl})
			id, err := m.CreateSession(ctx, newSessionData(), 0)
			if err != nil {
				t.Fatal(err)
			}

			// Used every 20 minutes, it outlives its 30-minute TTL many
			// times over.
			for i := range 6 {
				mr.FastForward(20 * time.Minute)
				if err := tt.slide(ctx, m, id); err != nil {
					t.Fatalf("use %d, %v after creation: %v", i, time.Duration(i+1)*20*time.Minute, err)
				}
			}

			// Left idle, it expires one TTL after its last use.
			mr.FastForward(ttl - time.Second)
			var got sessionData
			if err := m.GetSession(ctx, id, &got); err != nil {
				t.Fatalf("GetSession just before expiry = %v", err)
			}
			mr.FastForward(time.Second)
			if err := m.GetSession(ctx, id, &got); !errors.Is(err, cachemgr.ErrMiss) {
				t.Errorf("GetSession after idle TTL = %v, want ErrMiss", err)
			}
		})
	}
}

func TestSessionTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		giveDefaultTTL time.Duration
		giveTTL        time.Duration
		wantTTL        time.Duration // 0: no expiry
	}{
		{"explicit", 0, 15 * time.Minute, 15 * time.Minute},
		{"explicit milliseconds", 0, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"default", 0, 0, cachemgr.DefaultTTL},
		{"configured default", 2 * time.Hour, 0, 2 * time.Hour},
		{"no expiry", 0, cachemgr.NoExpiry, 0},
		{"no expiry by default", cachemgr.NoExpiry, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{DefaultTTL: tt.giveDefaultTTL})

			id, err := m.CreateSession(ctx, "data", tt.giveTTL)
			if err != nil {
				t.Fatal(err)
			}
			key := m.Key("session:" + id)
			if got := mr.TTL(key); got != tt.wantTTL {
				t.Errorf("TTL after create = %v, want %v", got, tt.wantTTL)
			}

			// Refresh and Touch apply the same TTL to a session that had
			// another one.
			for name, slide := range map[string]func() error{
				"refresh": func() error { return m.RefreshSession(ctx, id, tt.giveTTL) },
				"touch":   func() error { var s string; return m.TouchSession(ctx, id, &s, tt.giveTTL) },
			} {
				mr.SetTTL(key, 7*time.Second)
				if err := slide(); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got := mr.TTL(key); got != tt.wantTTL {
					t.Errorf("TTL after %s = %v, want %v", name, got, tt.wantTTL)
				}
			}
		})
	}
}

func TestSessionIDsAreUniqueAndWellFormed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})

	const workers, perWorker = 10, 1000
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				id, err := m.CreateSession(ctx, w, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				ids[w] = append(ids[w], id)
			}
		})
	}
	wg.Wait()

	seen := make(map[string]bool, workers*perWorker)
	for _, batch := range ids {
		for _, id := range batch {
			if seen[id] {
				t.Fatalf("id %s issued twice", id)
			}
			seen[id] = true
			if !sessionIDPattern.MatchString(id) {
				t.Fatalf("id %q is not 43 base64url characters", id)
			}
			raw, err := base64.RawURLEncoding.Strict().DecodeString(id)
			if err != nil || len(raw) != 32 {
				t.Fatalf("id %q decodes to %d bytes, %v; want 32", id, len(raw), err)
			}
		}
	}
	if len(seen) != workers*perWorker {
		t.Errorf("%d ids, want %d", len(seen), workers*perWorker)
	}
	if got := len(mr.Keys()); got != workers*perWorker {
		t.Errorf("%d session keys, want %d", got, workers*perWorker)
	}
}

func TestSessionRejectsMalformedIDs(t *testing.T) {
	t.Parallel()
	valid := strings.Repeat("A", 43) // 32 zero bytes
	tests := []struct {
		name    string
		giveID  string
		wantMsg string
	}{
		{"empty", "", "0 bytes long"},
		{"short", "abc", "3 bytes long"},
		{"42 characters", valid[:42], "42 bytes long"},
		{"44 characters", valid + "A", "44 bytes long"},
		{"padded", valid[:42] + "=", "offset 42"},
		{"std alphabet plus", "+" + valid[1:], "offset 0"},
		{"std alphabet slash", valid[:10] + "/" + valid[11:], "offset 10"},
		{"newline", valid[:20] + "\n" + valid[21:], "offset 20"},
		{"space", valid[:20] + " " + valid[21:], "offset 20"},
		{"dot", valid[:5] + "." + valid[6:], "offset 5"},
		{"glob star", valid[:42] + "*", "offset 42"},
		{"non-ASCII", valid[:41] + "é", "offset 41"},
		{"non-canonical last character", valid[:42] + "B", "canonical"},
		{"path", "../../" + valid[6:], "offset 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{})
			if err := m.Ping(ctx); err != nil { // connection set up before counting
				t.Fatal(err)
			}
			before := mr.CommandCount()

			var dst sessionData
			errs := map[string]error{
				"GetSession":     m.GetSession(ctx, tt.giveID, &dst),
				"TouchSession":   m.TouchSession(ctx, tt.giveID, &dst, time.Minute),
				"RefreshSession": m.RefreshSession(ctx, tt.giveID, time.Minute),
				"DeleteSession":  m.DeleteSession(ctx, tt.giveID),
			}
			for name, err := range errs {
				if !errors.Is(err, cachemgr.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s = %v, want ErrInvalidArgument mentioning %q", name, err, tt.wantMsg)
				}
				if len(tt.giveID) > 3 && strings.Contains(err.Error(), tt.giveID) {
					t.Errorf("%s error %q repeats the id", name, err)
				}
			}
			if got := mr.CommandCount() - before; got != 0 {
				t.Errorf("%d commands reached Redis, want 0", got)
			}
		})
	}

	// The well-formed id of the table is accepted (and simply not found).
	m, _ := miniManager(t, cachemgr.Options{})
	var dst sessionData
	if err := m.GetSession(context.Background(), valid, &dst); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession(valid id) = %v, want ErrMiss", err)
	}
}

func TestSessionDecodeAndArgumentErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	id, err := m.CreateSession(ctx, newSessionData(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var notPointer sessionData
	tests := []struct {
		name    string
		giveDst any
		wantErr error
	}{
		{"wrong type", new(int), cachemgr.ErrDecode},
		{"wrong field type", new(struct {
			UserID string `json:"user_id"`
		}), cachemgr.ErrDecode},
		{"nil", nil, cachemgr.ErrInvalidArgument},
		{"nil pointer", (*sessionData)(nil), cachemgr.ErrInvalidArgument},
		{"not a pointer", notPointer, cachemgr.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the subtests share the session.
			for name, err := range map[string]error{
				"GetSession":   m.GetSession(ctx, id, tt.giveDst),
				"TouchSession": m.TouchSession(ctx, id, tt.giveDst, time.Minute),
			} {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("%s = %v, want %v", name, err, tt.wantErr)
				}
				if err != nil && strings.Contains(err.Error(), id) {
					t.Errorf("%s error %q contains the session id", name, err)
				}
			}
		})
	}

	// Bad data and TTLs are rejected by CreateSession, which then stores
	// nothing.
	before := len(mr.Keys())
	if _, err := m.CreateSession(ctx, make(chan int), time.Minute); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("CreateSession(chan) = %v, want ErrInvalidArgument", err)
	}
	for _, ttl := range []time.Duration{-time.Second, time.Microsecond} {
		if _, err := m.CreateSession(ctx, "data", ttl); !errors.Is(err, cachemgr.ErrInvalidArgument) {
			t.Errorf("CreateSession(ttl %v) = %v, want ErrInvalidArgument", ttl, err)
		}
		if err := m.RefreshSession(ctx, id, ttl); !errors.Is(err, cachemgr.ErrInvalidArgument) {
			t.Errorf("RefreshSession(ttl %v) = %v, want ErrInvalidArgument", ttl, err)
		}
	}
	if got := len(mr.Keys()); got != before {
		t.Errorf("%d keys, want %d", got, before)
	}
}

func TestSessionErrorsHideID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	id, err := m.CreateSession(ctx, "data", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mr.SetError("LOADING Redis is loading the dataset in memory")
	var dst string
	for name, err := range map[string]error{
		"GetSession":     m.GetSession(ctx, id, &dst),
		"TouchSession":   m.TouchSession(ctx, id, &dst, time.Minute),
		"RefreshSession": m.RefreshSession(ctx, id, time.Minute),
		"DeleteSession":  m.DeleteSession(ctx, id),
	} {
		if err == nil || errors.Is(err, cachemgr.ErrMiss) {
			t.Errorf("%s = %v, want a server error", name, err)
			continue
		}
		if strings.Contains(err.Error(), id) {
			t.Errorf("%s error %q contains the session id", name, err)
		}
	}
	if _, err := m.CreateSession(ctx, "data", time.Minute); err == nil || !strings.Contains(err.Error(), "create session") {
		t.Errorf("CreateSession = %v, want a server error", err)
	}
}

func TestSessionAfterClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _ := miniManager(t, cachemgr.Options{})
	id, err := m.CreateSession(ctx, "data", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var dst string
	_, createErr := m.CreateSession(ctx, "data", time.Minute)
	for name, err := range map[string]error{
		"CreateSession":  createErr,
		"GetSession":     m.GetSession(ctx, id, &dst),
		"TouchSession":   m.TouchSession(ctx, id, &dst, time.Minute),
		"RefreshSession": m.RefreshSession(ctx, id, time.Minute),
		"DeleteSession":  m.DeleteSession(ctx, id),
	} {
		if !errors.Is(err, cachemgr.ErrClosed) {
			t.Errorf("%s = %v, want ErrClosed", name, err)
		}
	}
}

func TestSessionRealRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := realManager(t, redistest.URL(t, 2))
	rdb := m.Client()
	want := newSessionData()

	id, err := m.CreateSession(ctx, want, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	key := m.Key("session:" + id)
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 2*time.Second {
		t.Errorf("PTTL after create = %v, want (0, 2s]", ttl)
	}

	var got sessionData
	if err := m.TouchSession(ctx, id, &got, time.Hour); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TouchSession (-want +got):\n%s", diff)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("PTTL after touch = %v, want about 1h", ttl)
	}
	if err := m.RefreshSession(ctx, id, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 1500*time.Millisecond {
		t.Errorf("PTTL after refresh = %v, want (0, 1.5s]", ttl)
	}
	if err := m.RefreshSession(ctx, id, cachemgr.NoExpiry); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl != -1 {
		t.Errorf("PTTL after refresh(NoExpiry) = %v, want -1 (no expiry)", ttl)
	}
	if err := m.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := m.GetSession(ctx, id, &got); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession after delete = %v, want ErrMiss", err)
	}
	if err := m.RefreshSession(ctx, id, cachemgr.NoExpiry); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("RefreshSession(NoExpiry) after delete = %v, want ErrMiss", err)
	}
}
