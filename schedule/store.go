package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

const (
	// Key is the Redis hash of the stored entries: field an entry's name,
	// value its JSON.
	Key = "forgeq:schedule:entries"
	// VersionField is the field of Key that counts the changes to the
	// entries; no entry name can be it.
	VersionField = "#version"
	// HistoryKeyPrefix starts the key of each entry's enqueue history,
	// asynq's own (a sorted set of enqueue events by time), which the
	// dashboard shows: HistoryKeyPrefix + name.
	HistoryKeyPrefix = "asynq:scheduler_history:"
)

// MaxNameLen is the longest name of a stored entry, in bytes, so that the
// ids of its tasks ("sched:<name>:<Unix seconds>") stay within
// tasks.MaxNameLen.
const MaxNameLen = 100

// txRetries bounds the optimistic transactions of Pause and Resume.
const txRetries = 20

// Entry is a periodic entry stored in Redis: at every tick of Spec, a task
// of Type with Payload is enqueued on Queue, unless the entry is paused.
type Entry struct {
	// Name identifies the entry: 1 to MaxNameLen of A-Z a-z 0-9 _ . -,
	// and part of the id of every task it enqueues.
	Name string `json:"name"`
	// Spec is "@every <duration>" (whole seconds; ticks fall on multiples
	// of it since the Unix epoch), a descriptor such as "@hourly", or a
	// five-field cron spec, in UTC unless it starts with CRON_TZ=.
	Spec string `json:"spec"`
	// Type is the task type: one of the program's or of the task
	// catalogue.
	Type string `json:"type"`
	// Payload is the task's payload, a JSON object; empty means {}.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Queue, when not empty, overrides the type's queue.
	Queue string `json:"queue,omitempty"`
	// Paused entries enqueue nothing until resumed.
	Paused bool `json:"paused"`
	// Updated is when the entry was last put, paused or resumed; set by
	// the Store.
	Updated time.Time `json:"updated,omitzero"`
}

// Info is a stored entry with its ticks, as List reports it.
type Info struct {
	Entry
	// Next is the entry's next tick; zero while it is paused.
	Next time.Time `json:"next,omitzero"`
	// Prev is the last tick a worker enqueued; zero if none did (or its
	// history was cleared).
	Prev time.Time `json:"prev,omitzero"`
}

// Store reads and writes the entries in Redis. It is safe for concurrent
// use.
type Store struct {
	rdb   redis.UniversalClient
	types workflow.Types
	now   func() time.Time
}

// NewStore returns a Store on rdb that checks the entries it puts against
// types: workflow.CatalogTypes(reg, tasks.NewCatalog(rdb)) checks them
// against a program's types and the task catalogue. A Store with nil types
// reads, pauses, resumes and removes, but Put refuses every entry.
func NewStore(rdb redis.UniversalClient, types workflow.Types) *Store {
	return &Store{rdb: rdb, types: types, now: time.Now}
}

// Check checks e as Put does, and returns it as Put would store it (spec
// trimmed, payload compact, {} for none). The error wraps ErrInvalid for a
// refused entry; another error is a failure to read the task catalogue.
func (s *Store) Check(ctx context.Context, e Entry) (Entry, error) {
	if s.types == nil {
		return Entry{}, fmt.Errorf("%w: this store has no task types to check entries against", ErrInvalid)
	}
	raw, err := json.Marshal(struct {
		Name    string          `json:"name"`
		Spec    string          `json:"spec"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload,omitempty"`
		Queue   string          `json:"queue,omitempty"`
	}{e.Name, e.Spec, e.Type, e.Payload, e.Queue})
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry %q: payload: %w", ErrInvalid, e.Name, err)
	}
	ce, err := config.ParseScheduleEntry(raw)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry %q: %w", ErrInvalid, e.Name, err)
	}
	if len(ce.Name) > MaxNameLen {
		return Entry{}, fmt.Errorf("%w: entry name is %d bytes, over the %d-byte limit", ErrInvalid, len(ce.Name), MaxNameLen)
	}
	if next, _ := Next(ce.Spec, s.now()); next.IsZero() {
		return Entry{}, fmt.Errorf("%w: entry %q: spec %q never matches a date", ErrInvalid, ce.Name, ce.Spec)
	}
	b, err := s.types.Lookup(ctx, ce.Type)
	if errors.Is(err, tasks.ErrUnknownType) {
		return Entry{}, fmt.Errorf("%w: entry %q: %w", ErrInvalid, ce.Name, err)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("schedule: look up task type %q: %w", ce.Type, err)
	}
	var opts []asynq.Option
	if ce.Queue != "" {
		opts = append(opts, asynq.Queue(ce.Queue))
	}
	if _, err := b.NewTask([]byte(ce.Payload), opts...); err != nil {
		return Entry{}, fmt.Errorf("%w: entry %q: %w", ErrInvalid, ce.Name, err)
	}
	return Entry{Name: ce.Name, Spec: ce.Spec, Type: ce.Type, Payload: json.RawMessage(ce.Payload), Queue: ce.Queue, Paused: e.Paused}, nil
}

// Put adds e, or replaces the entry of its name, after checking it (see
// Check); created reports whether it is new. Every worker runs the new
// entry from its next tick on. The error wraps ErrInvalid for a refused
// entry, and nothing is written.
func (s *Store) Put(ctx context.Context, e Entry) (stored Entry, created bool, err error) {
	e, err = s.Check(ctx, e)
	if err != nil {
		return Entry{}, false, err
	}
	e.Updated = s.now().UTC().Truncate(time.Millisecond)
	b, err := json.Marshal(e)
	if err != nil {
		return Entry{}, false, fmt.Errorf("schedule: put %q: %w", e.Name, err)
	}
	var set *redis.IntCmd
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		set = p.HSet(ctx, Key, e.Name, b)
		p.HIncrBy(ctx, Key, VersionField, 1)
		return nil
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("schedule: put %q: %w", e.Name, err)
	}
	return e, set.Val() == 1, nil
}

// Get returns the entry named name, or ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (Entry, error) {
	v, err := s.rdb.HGet(ctx, Key, name).Result()
	if errors.Is(err, redis.Nil) || name == VersionField {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("schedule: get %q: %w", name, err)
	}
	return decode(name, v)
}

// List returns every stored entry, sorted by name, with its next and
// previous tick. An entry that cannot be decoded (written by something
// else) is skipped.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	entries, _, err := s.Entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Info, len(entries))
	if len(entries) == 0 {
		return out, nil
	}
	cmds := make([]*redis.ZSliceCmd, len(entries))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			cmds[i] = p.ZRevRangeWithScores(ctx, HistoryKeyPrefix+e.Name, 0, 0)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("schedule: list: %w", err)
	}
	now := s.now()
	for i, e := range entries {
		out[i].Entry = e
		if !e.Paused {
			out[i].Next, _ = Next(e.Spec, now)
		}
		if zs := cmds[i].Val(); len(zs) > 0 {
			out[i].Prev = time.Unix(int64(zs[0].Score), 0).UTC()
		}
	}
	return out, nil
}

// Entries returns every stored entry, sorted by name, and the version of
// the entries it read: what a worker's scheduler loads.
func (s *Store) Entries(ctx context.Context) ([]Entry, int64, error) {
	all, err := s.rdb.HGetAll(ctx, Key).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("schedule: list: %w", err)
	}
	var (
		out     []Entry
		version int64
	)
	for name, v := range all {
		if name == VersionField {
			version, _ = strconv.ParseInt(v, 10, 64)
			continue
		}
		e, err := decode(name, v)
		if err != nil {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, version, nil
}

// Version returns the version of the entries: it changes with every Put,
// Pause, Resume and Remove, so a reader that has loaded version v needs
// to read them again only when it is no longer v. 0: none ever stored.
func (s *Store) Version(ctx context.Context) (int64, error) {
	v, err := s.rdb.HGet(ctx, Key, VersionField).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("schedule: version: %w", err)
	}
	return v, nil
}

// Pause pauses the entry named name: no worker enqueues its ticks until
// Resume. Pausing a paused entry changes nothing. The error is ErrNotFound
// for an unknown name.
func (s *Store) Pause(ctx context.Context, name string) (Entry, error) {
	return s.setPaused(ctx, name, true)
}

// Resume resumes the entry named name: workers enqueue its ticks again
// from the next one (the ticks that fell while it was paused are not made
// up). The error is ErrNotFound for an unknown name.
func (s *Store) Resume(ctx context.Context, name string) (Entry, error) {
	return s.setPaused(ctx, name, false)
}

func (s *Store) setPaused(ctx context.Context, name string, paused bool) (Entry, error) {
	var out Entry
	op := "resume"
	if paused {
		op = "pause"
	}
	for range txRetries {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.HGet(ctx, Key, name).Result()
			if errors.Is(err, redis.Nil) || name == VersionField {
				return fmt.Errorf("%w: %q", ErrNotFound, name)
			}
			if err != nil {
				return err
			}
			e, err := decode(name, v)
			if err != nil {
				return err
			}
			if e.Paused == paused {
				out = e
				return nil
			}
			e.Paused = paused
			e.Updated = s.now().UTC().Truncate(time.Millisecond)
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, Key, name, b)
				p.HIncrBy(ctx, Key, VersionField, 1)
				return nil
			})
			out = e
			return err
		}, Key)
		switch {
		case errors.Is(err, redis.TxFailedErr):
			continue // changed meanwhile: read it again
		case errors.Is(err, ErrNotFound):
			return Entry{}, err
		case err != nil:
			return Entry{}, fmt.Errorf("schedule: %s %q: %w", op, name, err)
		}
		return out, nil
	}
	return Entry{}, fmt.Errorf("schedule: %s %q: the entry kept changing; try again", op, name)
}

// Remove deletes the entry named name and its enqueue history; every
// worker stops enqueuing it (a program entry of the same name runs again).
// The error is ErrNotFound for an unknown name.
func (s *Store) Remove(ctx context.Context, name string) error {
	if name == VersionField {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	var del *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, Key, name)
		p.HIncrBy(ctx, Key, VersionField, 1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("schedule: remove %q: %w", name, err)
	}
	if del.Val() == 0 {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	// Another slot on a cluster: not in the transaction.
	if err := s.rdb.Del(ctx, HistoryKeyPrefix+name).Err(); err != nil {
		return fmt.Errorf("schedule: remove %q: clear its history: %w", name, err)
	}
	return nil
}

// decode decodes the stored JSON of the entry named name.
func decode(name, v string) (Entry, error) {
	var e Entry
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return Entry{}, fmt.Errorf("schedule: entry %q: %w", name, err)
	}
	e.Name = name
	return e, nil
}

// Next returns the first tick of spec strictly after t, as every worker
// computes it: an "@every" spec ticks on multiples of its period since
// the Unix epoch, a cron spec in UTC unless it sets CRON_TZ. It returns
// the zero time when spec has no tick in the next five years, and an
// error for a bad spec.
func Next(spec string, t time.Time) (time.Time, error) {
	sched, err := config.ParseScheduleSpec(spec)
	if err != nil {
		return time.Time{}, err
	}
	if c, ok := sched.(cron.ConstantDelaySchedule); ok {
		d := int64(c.Delay)
		return time.Unix(0, (t.UnixNano()/d+1)*d), nil
	}
	return sched.Next(t.UTC()), nil
}
