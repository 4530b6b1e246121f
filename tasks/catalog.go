package tasks

import (
	"bytes"
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
	validator "github.com/santhosh-tekuri/jsonschema/v6"
)

// Keys of the task catalogue in Redis (see the package doc for their
// contents). A Redis ACL user of a worker or a producer needs ~forgeq:*.
const (
	// CatalogTypesKey is the hash of published task types: field the type
	// name, value its JSON document.
	CatalogTypesKey = "forgeq:catalog:types"
	// CatalogWorkersPrefix begins the sorted set of the workers serving a
	// type, one per type (CatalogWorkersPrefix + type name): member the
	// worker id, score when it was last seen, in Unix seconds.
	CatalogWorkersPrefix = "forgeq:catalog:workers:"
)

// CatalogWorkerExpiry is how long a worker stays listed as serving a type
// after it was last seen. Workers refresh their entries far more often;
// one that stopped without withdrawing (killed, crashed) drops out of the
// listings after this long, and Publish deletes its entries.
const CatalogWorkerExpiry = 24 * time.Hour

// ErrInvalidCatalogEntry is wrapped by the error of a published type whose
// document or schema cannot be read: written by hand or by a producer of
// another version.
var ErrInvalidCatalogEntry = errors.New("tasks: invalid catalogue entry")

// Catalog is the task catalogue in Redis: each worker publishes the task
// types it serves (name, description, the payload's JSON Schema and the
// default queue, retries and timeout) so that producers built without a
// type, such as the enqueue CLI and the web process, can validate payloads
// and apply the type's defaults. A Catalog is safe for concurrent use.
type Catalog struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// CatalogOption configures a Catalog; see WithClock.
type CatalogOption interface {
	apply(*Catalog)
}

type clockOption func() time.Time

func (o clockOption) apply(c *Catalog) { c.now = o }

// WithClock makes the catalogue read the time from now instead of
// time.Now: when workers were last seen, when types were published, and
// which entries have expired. Tests use it.
func WithClock(now func() time.Time) CatalogOption { return clockOption(now) }

// NewCatalog returns the catalogue on rdb, which may be a single node, a
// Sentinel-managed or a cluster client: the catalogue sends no MULTI, and
// its pipelines are split by slot on a cluster. The caller closes rdb.
func NewCatalog(rdb redis.UniversalClient, opts ...CatalogOption) *Catalog {
	c := &Catalog{rdb: rdb, now: time.Now}
	for _, o := range opts {
		o.apply(c)
	}
	return c
}

// WorkerInfo identifies a worker publishing its types.
type WorkerInfo struct {
	// ID identifies the worker process, unique among all workers ever
	// run, such as "host/1234/9f8e7d" (host name, process id, random).
	ID string
	// Queues are the queues the worker takes tasks from. Publish reports
	// the types whose default queue is not among them; nil: not checked.
	Queues []string
}

// WorkerSeen is a worker serving a published type.
type WorkerSeen struct {
	// ID is the worker's WorkerInfo.ID.
	ID string
	// LastSeen is when the worker last published or refreshed the type,
	// to the second.
	LastSeen time.Time
}

// PublishedType is a task type as a worker published it. Its methods
// validate payloads and build tasks as the worker's own Definition would,
// from the published schema and defaults. A PublishedType is immutable and
// safe for concurrent use.
type PublishedType struct {
	// Type is the task type name, e.g. "data:process".
	Type string
	// Description is the type's one-line description.
	Description string
	// Queue is the queue tasks of the type go to by default.
	Queue string
	// MaxRetry is the type's default retry limit; nil when it sets none
	// (asynq's default of 25 then applies).
	MaxRetry *int
	// Timeout is the type's default timeout per attempt; 0 when it sets
	// none (asynq's default of 30 minutes then applies).
	Timeout time.Duration
	// Retention is how long a completed task of the type is kept by
	// default; 0 when it sets none.
	Retention time.Duration
	// Schema is the payload's JSON Schema (draft 2020-12).
	Schema json.RawMessage
	// TakesPrevious says what the type's handler reads as the result of
	// the workflow stage before it (Type.TakesPrevious); empty when it
	// reads none.
	TakesPrevious string
	// PublishedAt is when the type was last published.
	PublishedAt time.Time
	// Workers are the workers serving the type, most recently seen first;
	// empty when every one has withdrawn or expired.
	Workers []WorkerSeen

	compiled *validator.Schema // Schema compiled; nil: compiled on use
}

// Defaults returns the asynq options every task of the type gets: its
// queue, and its retry limit, timeout and retention when it sets them.
func (p PublishedType) Defaults() []asynq.Option {
	opts := []asynq.Option{asynq.Queue(p.queue())}
	if p.MaxRetry != nil {
		opts = append(opts, asynq.MaxRetry(*p.MaxRetry))
	}
	if p.Timeout > 0 {
		opts = append(opts, asynq.Timeout(p.Timeout))
	}
	if p.Retention > 0 {
		opts = append(opts, asynq.Retention(p.Retention))
	}
	return opts
}

func (p PublishedType) queue() string {
	if p.Queue == "" {
		return "default"
	}
	return p.Queue
}

// Validate checks payload against the published schema; an empty payload
// is {}. Errors wrap ErrInvalidPayload and name the fields at fault
// (`missing required field "work"`, `field "work": minimum: got 0, want
// 1`, `unknown field "colour"`), or wrap ErrInvalidCatalogEntry when the
// published schema itself is unusable.
func (p PublishedType) Validate(payload []byte) error {
	sch := p.compiled
	if sch == nil {
		var err error
		if sch, err = compileSchema(p.Type, p.Schema); err != nil {
			return err
		}
	}
	return validateSchema(p.Type, sch, payload)
}

// NewTask validates payload and builds a task of the type with the
// published defaults (Defaults) followed by opts. Errors wrap
// ErrInvalidPayload, ErrInvalidCatalogEntry, or ErrInvalidOption and an
// *OptionError for an option CheckOption refuses, as Definition.NewTask's
// do.
func (p PublishedType) NewTask(payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
	if err := p.Validate(payload); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if len(bytes.TrimSpace(payload)) == 0 {
		buf.WriteString("{}")
	} else if err := json.Compact(&buf, payload); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, p.Type, err)
	}
	all := append(p.Defaults(), opts...)
	if err := checkOptions(p.Type, all, time.Now()); err != nil {
		return nil, err
	}
	// A header map of its own, which Client.EnqueueContext fills with
	// the trace context and request id.
	return asynq.NewTaskWithHeaders(p.Type, buf.Bytes(), map[string]string{}, all...), nil
}

// catalogDoc is the JSON document of a published type, the value of its
// field in CatalogTypesKey. The package doc describes it for producers in
// other languages: change it only compatibly.
type catalogDoc struct {
	Type           string          `json:"type"`
	Description    string          `json:"description"`
	Queue          string          `json:"queue"`
	MaxRetry       *int            `json:"max_retry,omitempty"`
	TimeoutSeconds *int64          `json:"timeout_seconds,omitempty"`
	RetentionSecs  *int64          `json:"retention_seconds,omitempty"`
	Schema         json.RawMessage `json:"schema"`
	TakesPrevious  string          `json:"takes_previous,omitempty"`
	PublishedAt    time.Time       `json:"published_at"`
}

// docOf returns the catalogue document of d, published at now.
func docOf(d *Definition, now time.Time) (catalogDoc, error) {
	schema, err := d.schema()
	if err != nil {
		return catalogDoc{}, err
	}
	doc := catalogDoc{
		Type:        d.typ,
		Description: d.description,
		Queue:       d.Queue(),
		Schema:      schema,
		PublishedAt: now.UTC().Truncate(time.Second),

		TakesPrevious: d.previous,
	}
	if n, ok := d.MaxRetry(); ok {
		doc.MaxRetry = &n
	}
	if t, ok := d.Timeout(); ok {
		s := int64(t / time.Second) // asynq keeps timeouts in whole seconds
		doc.TimeoutSeconds = &s
	}
	if r, ok := d.Retention(); ok && r >= time.Second {
		s := int64(r / time.Second)
		doc.RetentionSecs = &s
	}
	return doc, nil
}

// sameDefinition reports whether a and b publish the same type: the same
// schema, description and defaults, whenever they were published.
func sameDefinition(a, b catalogDoc) bool {
	var sa, sb bytes.Buffer
	if json.Compact(&sa, a.Schema) != nil || json.Compact(&sb, b.Schema) != nil {
		return false
	}
	eqInt := func(x, y *int) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqInt64 := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Type == b.Type && a.Description == b.Description && a.Queue == b.Queue &&
		eqInt(a.MaxRetry, b.MaxRetry) && eqInt64(a.TimeoutSeconds, b.TimeoutSeconds) &&
		bytes.Equal(sa.Bytes(), sb.Bytes())
}

// PublishReport is what Publish did.
type PublishReport struct {
	// Types are the type names published, sorted.
	Types []string
	// Changed are the types that were already published with another
	// schema, description or defaults (by a worker of another version, or
	// of another program using the same type name): Publish replaced them,
	// the last writer wins. A worker logs a warning for each.
	Changed []string
	// Unserved are the types whose default queue is not among the
	// worker's queues (WorkerInfo.Queues): the worker will not run their
	// tasks unless they are enqueued on one of its queues.
	Unserved []string
}

// Publish writes every type of reg into the catalogue, replacing what was
// published before, and marks worker w as serving each, seen now. It
// deletes the entries of workers not seen for CatalogWorkerExpiry. It
// takes two round trips, without MULTI: on a cluster the types key and
// each workers key may live on different nodes. Errors are Redis errors,
// or name a type whose payload has no JSON Schema.
func (c *Catalog) Publish(ctx context.Context, reg *Registry, w WorkerInfo) (PublishReport, error) {
	if w.ID == "" {
		return PublishReport{}, errors.New("tasks: catalog: publish: empty worker id")
	}
	now := c.now()
	defs := reg.Definitions()
	report := PublishReport{Types: make([]string, 0, len(defs))}
	docs := make([]any, 0, 2*len(defs))
	fresh := make([]catalogDoc, len(defs))
	for i, d := range defs {
		doc, err := docOf(d, now)
		if err != nil {
			return PublishReport{}, fmt.Errorf("tasks: catalog: publish: %w", err)
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return PublishReport{}, fmt.Errorf("tasks: catalog: publish %s: %w", d.typ, err)
		}
		fresh[i] = doc
		report.Types = append(report.Types, d.typ)
		docs = append(docs, d.typ, string(b))
		if w.Queues != nil && !slices.Contains(w.Queues, doc.Queue) {
			report.Unserved = append(report.Unserved, d.typ)
		}
	}
	if len(defs) == 0 {
		return report, nil
	}

	prev, err := c.rdb.HMGet(ctx, CatalogTypesKey, report.Types...).Result()
	if err != nil {
		return PublishReport{}, fmt.Errorf("tasks: catalog: publish: read published types: %w", err)
	}
	for i, v := range prev {
		s, ok := v.(string)
		if !ok {
			continue // not published yet
		}
		var old catalogDoc
		if json.Unmarshal([]byte(s), &old) != nil || !sameDefinition(old, fresh[i]) {
			report.Changed = append(report.Changed, fresh[i].Type)
		}
	}

	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, CatalogTypesKey, docs...)
		c.seen(ctx, p, report.Types, w.ID, now)
		return nil
	})
	if err != nil {
		return PublishReport{}, fmt.Errorf("tasks: catalog: publish: %w", err)
	}
	return report, nil
}

// seen queues, on p, the commands that mark worker id as serving types at
// now and delete the entries of workers not seen for CatalogWorkerExpiry.
func (c *Catalog) seen(ctx context.Context, p redis.Pipeliner, types []string, id string, now time.Time) {
	expired := "(" + strconv.FormatInt(now.Add(-CatalogWorkerExpiry).Unix(), 10)
	for _, t := range types {
		key := CatalogWorkersPrefix + t
		p.ZAdd(ctx, key, redis.Z{Score: float64(now.Unix()), Member: id})
		p.ZRemRangeByScore(ctx, key, "-inf", expired)
	}
}

// Heartbeat refreshes when worker w was last seen serving the types of
// reg, in one round trip. A type missing from the catalogue (deleted since
// Publish, by a FLUSHDB say) is published again; one present is left as
// it is, even if another worker replaced it. Errors are Redis errors.
func (c *Catalog) Heartbeat(ctx context.Context, reg *Registry, w WorkerInfo) error {
	if w.ID == "" {
		return errors.New("tasks: catalog: heartbeat: empty worker id")
	}
	now := c.now()
	defs := reg.Definitions()
	types := make([]string, 0, len(defs))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range defs {
			doc, err := docOf(d, now)
			if err != nil {
				return err
			}
			b, err := json.Marshal(doc)
			if err != nil {
				return err
			}
			p.HSetNX(ctx, CatalogTypesKey, d.typ, string(b))
			types = append(types, d.typ)
		}
		c.seen(ctx, p, types, w.ID, now)
		return nil
	})
	if err != nil {
		return fmt.Errorf("tasks: catalog: heartbeat: %w", err)
	}
	return nil
}

// Withdraw removes worker w from the workers of every type of reg, as a
// worker does when it shuts down gracefully. The types stay published, so
// producers can still validate and enqueue tasks for the next worker.
// Errors are Redis errors.
func (c *Catalog) Withdraw(ctx context.Context, reg *Registry, w WorkerInfo) error {
	types := reg.Types()
	if len(types) == 0 {
		return nil
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range types {
			p.ZRem(ctx, CatalogWorkersPrefix+t, w.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tasks: catalog: withdraw: %w", err)
	}
	return nil
}

// Types returns every published type, sorted by name, with the workers
// serving it. Entries that cannot be read (see ErrInvalidCatalogEntry) are
// left out; Lookup of their type reports what is wrong. Errors are Redis
// errors.
func (c *Catalog) Types(ctx context.Context) ([]PublishedType, error) {
	all, err := c.rdb.HGetAll(ctx, CatalogTypesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("tasks: catalog: read types: %w", err)
	}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	slices.Sort(names)
	workers, err := c.workers(ctx, names)
	if err != nil {
		return nil, err
	}
	out := make([]PublishedType, 0, len(names))
	for i, name := range names {
		p, err := decodePublished(name, all[name])
		if err != nil {
			continue
		}
		p.Workers = workers[i]
		out = append(out, p)
	}
	return out, nil
}

// Lookup returns the published type typ with the workers serving it. A
// type no worker ever published gives an *UnpublishedError, which wraps
// ErrUnknownType; an entry that cannot be read gives an error wrapping
// ErrInvalidCatalogEntry; other errors are Redis errors.
func (c *Catalog) Lookup(ctx context.Context, typ string) (PublishedType, error) {
	var get *redis.StringCmd
	var ws *redis.ZSliceCmd
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.HGet(ctx, CatalogTypesKey, typ)
		ws = p.ZRevRangeWithScores(ctx, CatalogWorkersPrefix+typ, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return PublishedType{}, fmt.Errorf("tasks: catalog: look up %q: %w", typ, err)
	}
	doc, err := get.Result()
	if errors.Is(err, redis.Nil) {
		names, err := c.rdb.HKeys(ctx, CatalogTypesKey).Result()
		if err != nil {
			return PublishedType{}, fmt.Errorf("tasks: catalog: look up %q: %w", typ, err)
		}
		if len(names) == 0 {
			names = nil
		}
		slices.Sort(names)
		return PublishedType{}, &UnpublishedError{Type: typ, Published: names, Suggestion: SuggestType(typ, names)}
	}
	if err != nil {
		return PublishedType{}, fmt.Errorf("tasks: catalog: look up %q: %w", typ, err)
	}
	p, err := decodePublished(typ, doc)
	if err != nil {
		return PublishedType{}, err
	}
	p.Workers = c.current(ws.Val())
	return p, nil
}

// workers reads the workers of each type of names, in one round trip.
func (c *Catalog) workers(ctx context.Context, names []string) ([][]WorkerSeen, error) {
	out := make([][]WorkerSeen, len(names))
	if len(names) == 0 {
		return out, nil
	}
	cmds := make([]*redis.ZSliceCmd, len(names))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			cmds[i] = p.ZRevRangeWithScores(ctx, CatalogWorkersPrefix+name, 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tasks: catalog: read workers: %w", err)
	}
	for i, cmd := range cmds {
		out[i] = c.current(cmd.Val())
	}
	return out, nil
}

// current returns the workers of zs, a workers set read most recent
// first, seen within CatalogWorkerExpiry.
func (c *Catalog) current(zs []redis.Z) []WorkerSeen {
	cutoff := c.now().Add(-CatalogWorkerExpiry)
	var out []WorkerSeen
	for _, z := range zs {
		id, _ := z.Member.(string)
		seen := time.Unix(int64(z.Score), 0).UTC()
		if seen.Before(cutoff) {
			continue
		}
		out = append(out, WorkerSeen{ID: id, LastSeen: seen})
	}
	return out
}

// decodePublished reads the document of typ. Errors wrap
// ErrInvalidCatalogEntry.
func decodePublished(typ, s string) (PublishedType, error) {
	var doc catalogDoc
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		return PublishedType{}, fmt.Errorf("%w: %s: %v", ErrInvalidCatalogEntry, typ, err)
	}
	if doc.Type != typ {
		return PublishedType{}, fmt.Errorf("%w: %s: its document names type %q", ErrInvalidCatalogEntry, typ, doc.Type)
	}
	if len(doc.Schema) == 0 {
		return PublishedType{}, fmt.Errorf("%w: %s: no schema", ErrInvalidCatalogEntry, typ)
	}
	sch, err := compileSchema(typ, doc.Schema)
	if err != nil {
		return PublishedType{}, err
	}
	p := PublishedType{
		Type:        doc.Type,
		Description: doc.Description,
		Queue:       doc.Queue,
		MaxRetry:    doc.MaxRetry,
		Schema:      doc.Schema,
		PublishedAt: doc.PublishedAt,
		compiled:    sch,

		TakesPrevious: doc.TakesPrevious,
	}
	if p.Queue == "" {
		p.Queue = "default"
	}
	if doc.TimeoutSeconds != nil && *doc.TimeoutSeconds > 0 {
		p.Timeout = time.Duration(*doc.TimeoutSeconds) * time.Second
	}
	if doc.RetentionSecs != nil && *doc.RetentionSecs > 0 {
		p.Retention = time.Duration(*doc.RetentionSecs) * time.Second
	}
	return p, nil
}

// UnpublishedError is the error of Catalog.Lookup for a type no worker has
// ever published. It wraps ErrUnknownType.
type UnpublishedError struct {
	// Type is the type looked up.
	Type string
	// Published are the types the catalogue has, sorted.
	Published []string
	// Suggestion is the published type closest to Type, if one is close
	// enough to be a typo of it; else "".
	Suggestion string
}

// Error says that no worker ever published the type, names the published
// types and, when one is close, suggests it.
func (e *UnpublishedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v %q: no worker has ever published it to the task catalogue", ErrUnknownType, e.Type)
	if len(e.Published) == 0 {
		b.WriteString(" (the catalogue is empty: has a worker run against this Redis?)")
	} else {
		fmt.Fprintf(&b, " (published: %s)", strings.Join(e.Published, ", "))
	}
	if e.Suggestion != "" {
		fmt.Fprintf(&b, "; did you mean %q?", e.Suggestion)
	}
	return b.String()
}

// Unwrap returns ErrUnknownType.
func (e *UnpublishedError) Unwrap() error { return ErrUnknownType }

// SuggestType returns the name of names closest to typ, if one is close
// enough to be a typo of it (at most 2 edits, case folded, or a quarter of
// typ's length for long names), for "did you mean" messages; else "".
func SuggestType(typ string, names []string) string {
	best, bestDist := "", -1
	limit := max(2, len(typ)/4)
	for _, n := range names {
		d := editDistance(strings.ToLower(typ), strings.ToLower(n))
		if d <= limit && (bestDist < 0 || d < bestDist) {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance returns the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// Fields describes the payload's fields from the published schema, as
// Definition.Fields does from the payload struct: each property in the
// schema's order with its JSON type, whether it is required, and its
// description as help. It is nil when the schema has no properties.
func (p PublishedType) Fields() []Field {
	var doc struct {
		Properties orderedProperties `json:"properties"`
		Required   []string          `json:"required"`
	}
	if json.Unmarshal(p.Schema, &doc) != nil {
		return nil
	}
	var out []Field
	for _, prop := range doc.Properties {
		out = append(out, Field{
			Name:     prop.name,
			Type:     prop.schema.typeName(),
			Required: slices.Contains(doc.Required, prop.name),
			Help:     prop.schema.Description,
		})
	}
	return out
}

// orderedProperties is a schema's "properties" in the order of the
// document.
type orderedProperties []property

type property struct {
	name   string
	schema propertySchema
}

// propertySchema is what Fields reads of a property's schema.
type propertySchema struct {
	Type        json.RawMessage `json:"type"` // a string or an array of strings
	Items       *propertySchema `json:"items"`
	Description string          `json:"description"`
}

// typeName names the JSON type as Field.Type does: "string", "integer",
// "array of string", ...; types given as a list are joined with " or ".
func (s propertySchema) typeName() string {
	var one string
	var many []string
	switch {
	case json.Unmarshal(s.Type, &one) == nil:
	case json.Unmarshal(s.Type, &many) == nil:
		one = strings.Join(many, " or ")
	default:
		return "any"
	}
	if one == "array" && s.Items != nil {
		return "array of " + s.Items.typeName()
	}
	return one
}

// UnmarshalJSON reads the members of a JSON object in order.
func (o *orderedProperties) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("properties: want a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		var s propertySchema
		_ = json.Unmarshal(raw, &s) // a boolean schema (true) says nothing of the field
		*o = append(*o, property{name: name, schema: s})
	}
	return nil
}
