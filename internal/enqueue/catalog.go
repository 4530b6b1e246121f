package enqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/tasks"
)

// taskType is a task type the command can enqueue: one of the program's
// own (a *tasks.Definition) or one a worker published to the task
// catalogue (a tasks.PublishedType).
type taskType interface {
	name() string
	queue() string
	defaults() []asynq.Option
	newTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error)
}

// localType is a task type of the program's registry.
type localType struct{ d *tasks.Definition }

func (t localType) name() string             { return t.d.Type() }
func (t localType) queue() string            { return t.d.Queue() }
func (t localType) defaults() []asynq.Option { return t.d.Defaults() }
func (t localType) newTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
	return t.d.NewTask(payload, opts...)
}

// publishedType is a task type of the catalogue.
type publishedType struct{ p tasks.PublishedType }

func (t publishedType) name() string             { return t.p.Type }
func (t publishedType) queue() string            { return t.p.Queue }
func (t publishedType) defaults() []asynq.Option { return t.p.Defaults() }
func (t publishedType) newTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
	return t.p.NewTask(payload, opts...)
}

// lookupPublished looks typ up in the catalogue on k. A type no worker
// ever published is bad input whose message names the program's types
// and the published ones; a catalogue that cannot be read is a runtime
// failure.
func (c *cli) lookupPublished(ctx context.Context, k *conn, typ string) (publishedType, error) {
	p, err := tasks.NewCatalog(k.m.Client()).Lookup(ctx, typ)
	var unpub *tasks.UnpublishedError
	switch {
	case errors.As(err, &unpub):
		return publishedType{}, badInput("%s (see %s --list)", c.unknownType(typ, unpub.Published), c.prog)
	case err != nil:
		err = fmt.Errorf("task type %q is not one of this program's, and the task catalogue cannot be read: %w", typ, err)
		if s := tasks.SuggestType(typ, c.reg.Types()); s != "" {
			err = fmt.Errorf("%w; did you mean %q?", err, s)
		}
		return publishedType{}, err
	}
	if len(p.Workers) == 0 {
		fmt.Fprintf(c.stderr, "%s: warning: no running worker serves %q (every one that published it has stopped); the task waits until one starts\n", c.prog, typ)
	}
	return publishedType{p}, nil
}

// unknownType says that typ is neither one of the program's types nor a
// published one, naming both, with a suggestion when typ is close to one.
func (c *cli) unknownType(typ string, published []string) string {
	local := c.reg.Types()
	msg := fmt.Sprintf("unknown task type %q: not one of this program's types, and no worker has ever published it to the task catalogue; known types: %s; published types: %s",
		typ, listOrNone(local), listOrNone(published))
	if s := tasks.SuggestType(typ, append(local, published...)); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return msg
}

// typoHint says that typ, which the program lacks, is one typo away from
// one of its types, for an error that stops the command before the task
// catalogue has been read: "" when typ is close to none.
func (c *cli) typoHint(typ string) string {
	s := tasks.SuggestType(typ, c.reg.Types())
	if s == "" {
		return ""
	}
	return fmt.Sprintf("task type %q is not one of this program's; did you mean %q?", typ, s)
}

// listOrNone joins names with commas, or says none.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// typeSource finds the task types of --file lines: the program's own
// first, then the task catalogue, which it reads once, the first time a
// line names a type the program lacks. It is safe for concurrent use.
type typeSource struct {
	c *cli
	// read connects and reads the catalogue; nil: only the program's types.
	read func() (*catalogView, error)

	once sync.Once
	view *catalogView
	err  error

	mu     sync.Mutex
	missed []string // types looked up that the program lacks
}

// catalogView is the catalogue as read once.
type catalogView struct {
	types map[string]tasks.PublishedType
	names []string // sorted
}

// localTypes is a typeSource of the program's types only.
func (c *cli) localTypes() *typeSource { return &typeSource{c: c} }

// lookup returns the task type typ, or the error of the line that names
// it. When the catalogue cannot be read, the error is that of the read,
// which failed() reports too.
func (s *typeSource) lookup(typ string) (taskType, error) {
	if d, ok := s.c.reg.Lookup(typ); ok {
		return localType{d}, nil
	}
	s.mu.Lock()
	s.missed = append(s.missed, typ)
	s.mu.Unlock()
	if s.read == nil {
		msg := fmt.Sprintf("unknown task type %q; known types: %s", typ, strings.Join(s.c.reg.Types(), ", "))
		if sug := tasks.SuggestType(typ, s.c.reg.Types()); sug != "" {
			msg += fmt.Sprintf("; did you mean %q?", sug)
		}
		return nil, errors.New(msg)
	}
	s.once.Do(func() { s.view, s.err = s.read() })
	if s.err != nil {
		return nil, s.err
	}
	if p, ok := s.view.types[typ]; ok {
		return publishedType{p}, nil
	}
	return nil, errors.New(s.c.unknownType(typ, s.view.names))
}

// typoHint returns the typoHint of the first type, in sort order, that
// lookup was asked for, the program lacks, and is close to one of its
// types; "" when there is none.
func (s *typeSource) typoHint() string {
	s.mu.Lock()
	missed := slices.Sorted(slices.Values(s.missed))
	s.mu.Unlock()
	for _, typ := range missed {
		if h := s.c.typoHint(typ); h != "" {
			return h
		}
	}
	return ""
}

// failed returns the error of reading the catalogue, if it was read and
// that failed.
func (s *typeSource) failed() error {
	if s.read == nil {
		return nil
	}
	s.once.Do(func() {}) // waits for a read under way; marks an unread catalogue as read
	return s.err
}

// readCatalog reads every published type on k.
func readCatalog(ctx context.Context, k *conn) (*catalogView, error) {
	types, err := tasks.NewCatalog(k.m.Client()).Types(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the task catalogue: %w", err)
	}
	v := &catalogView{types: make(map[string]tasks.PublishedType, len(types))}
	for _, p := range types {
		v.types[p.Type] = p
		v.names = append(v.names, p.Type)
	}
	return v, nil
}

// catalogListing is the catalogue as --list shows it: the published types
// the program does not have, and the workers of every published type.
type catalogListing struct {
	extra []tasks.PublishedType          // published, not in the registry; sorted
	all   map[string]tasks.PublishedType // every published type, by name
}

// listCatalog connects and reads the catalogue for --list.
func (c *cli) listCatalog(ctx context.Context, fs *pflag.FlagSet) (*catalogListing, error) {
	cfg, err := c.loadConfig(fs)
	if err != nil {
		return nil, err
	}
	k, err := c.connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer k.close()
	types, err := tasks.NewCatalog(k.m.Client()).Types(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the task catalogue: %w", err)
	}
	l := &catalogListing{all: make(map[string]tasks.PublishedType, len(types))}
	for _, p := range types {
		l.all[p.Type] = p
		if _, ok := c.reg.Lookup(p.Type); !ok {
			l.extra = append(l.extra, p)
		}
	}
	return l, nil
}

// seenAgo says how long ago t was, to the second: "12s ago", "3m4s ago".
func seenAgo(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

// lazyConn is the connection of a command that may need Redis only after
// checking its input: opened by the first of the task catalogue's read
// and get, closed by close.
type lazyConn struct {
	open func() (*conn, error)
	k    *conn
}

// get returns the connection, opening it if need be.
func (l *lazyConn) get() (*conn, error) {
	if l.k == nil {
		k, err := l.open()
		if err != nil {
			return nil, err
		}
		l.k = k
	}
	return l.k, nil
}

func (l *lazyConn) close() {
	if l.k != nil {
		l.k.close()
	}
}

// lazyTypes returns the types a command checks its input against (the
// program's, then the task catalogue's, read once on first need) and the
// connection that read opens, for the command to go on with.
func (c *cli) lazyTypes(ctx context.Context, fs *pflag.FlagSet) (*typeSource, *lazyConn) {
	lazy := &lazyConn{open: func() (*conn, error) {
		cfg, err := c.loadConfig(fs)
		if err != nil {
			return nil, err
		}
		return c.connect(ctx, cfg)
	}}
	types := &typeSource{c: c, read: func() (*catalogView, error) {
		k, err := lazy.get()
		if err != nil {
			return nil, err
		}
		return readCatalog(ctx, k)
	}}
	return types, lazy
}
