package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxInlineResults is the most member results Previous and
// GroupResults.Results return at once; page through a bigger group with
// GroupResults.Each.
const MaxInlineResults = 1000

// MaxListedFailures is the most failures GroupResults lists.
const MaxListedFailures = 100

type stepKey struct{}

type stepCtx struct {
	c        *Client
	id, path string
	previous []byte        // WithPrevious
	results  *GroupResults // WithResults
	fixed    bool
}

// Current returns the workflow id and step path of the step running
// under ctx.
func Current(ctx context.Context) (id, path string, ok bool) {
	s, ok := ctx.Value(stepKey{}).(*stepCtx)
	if !ok {
		return "", "", false
	}
	return s.id, s.path, true
}

// WithPrevious returns ctx in which Previous returns result, for testing
// a step's handler without a workflow.
func WithPrevious(ctx context.Context, result []byte) context.Context {
	return context.WithValue(ctx, stepKey{}, &stepCtx{previous: result, fixed: true})
}

// WithResults returns ctx in which Results returns a group whose members
// returned results (nil for a failed member) and whose failed members are
// failures (member index -> error), for testing a callback's handler
// without a workflow.
func WithResults(ctx context.Context, results [][]byte, failures map[int]string) context.Context {
	g := &GroupResults{Total: len(results), Failed: len(failures), Succeeded: len(results) - len(failures), fixed: results, group: "0"}
	g.failed = failures
	for i := range results {
		if e, ok := failures[i]; ok && len(g.Failures) < MaxListedFailures {
			g.Failures = append(g.Failures, Failure{Member: i, Step: child(g.group, "m"+strconv.Itoa(i)), Error: e})
		}
	}
	return context.WithValue(ctx, stepKey{}, &stepCtx{results: g, fixed: true})
}

// Previous returns the result of the stage before the step running under
// ctx: for a chain's step, the step before it (the last step's result
// for a chain, the callback's for a group with one, and for a group
// without one a JSON array of its members' results, null for a failed
// member); for a group's member, the stage before the group; for a
// group's callback, its members' results as that JSON array. A result is
// the bytes the step's handler returned (nil: it returned none).
//
// Errors: ErrNotInWorkflow, ErrNoPrevious (the workflow's first stage),
// ErrTooManyResults (an array of more than MaxInlineResults), or Redis's.
func Previous(ctx context.Context) ([]byte, error) {
	s, ok := ctx.Value(stepKey{}).(*stepCtx)
	if !ok {
		return nil, ErrNotInWorkflow
	}
	if s.fixed {
		return s.previous, nil
	}
	prev, members, err := prevStage(s.path)
	if err != nil {
		return nil, err
	}
	return s.c.resultOf(ctx, s.id, prev, members)
}

// PreviousAs decodes Previous's result, a JSON document, into a T: the
// typed way for a step to take the result of the stage before it. Errors
// are Previous's, ErrNoResult, or the JSON decoding's.
func PreviousAs[T any](ctx context.Context) (T, error) {
	var v T
	b, err := Previous(ctx)
	if err != nil {
		return v, err
	}
	if len(b) == 0 {
		return v, ErrNoResult
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("workflow: previous: decode into %T: %w", v, err)
	}
	return v, nil
}

// prevStage returns the path of the stage before the step at path, and
// members true when that stage is the group whose callback the step is
// (or is in): then its members' results are what came before.
func prevStage(path string) (prev string, members bool, err error) {
	for path != rootPath {
		seg, par := last(path), parent(path)
		if seg == "cb" {
			return par, true, nil
		}
		if i, err := strconv.Atoi(seg); err == nil && i > 0 {
			return child(par, strconv.Itoa(i-1)), false, nil
		}
		path = par // first step of a chain, or a group's member
	}
	return "", false, ErrNoPrevious
}

func parent(p string) string {
	i := strings.LastIndexByte(p, '.')
	if i < 0 {
		return rootPath
	}
	return p[:i]
}

func last(p string) string { return p[strings.LastIndexByte(p, '.')+1:] }

// resultOf returns the result of the node at path: a task's own; a
// chain's last step's; a group's callback's, or without one (or with
// members) the JSON array of its members' results.
func (c *Client) resultOf(ctx context.Context, id, path string, members bool) ([]byte, error) {
	k := keys(id)
	shape, err := c.rdb.HGet(ctx, k[kShape], path).Result()
	if err != nil && !errors.Is(err, redis.Nil) { // redis.Nil: a task step
		return nil, fmt.Errorf("workflow: result of %s: %w", path, err)
	}
	parts := strings.Split(shape, ":")
	switch {
	case len(parts) == 2 && parts[0] == "c":
		n, _ := strconv.Atoi(parts[1])
		return c.resultOf(ctx, id, child(path, strconv.Itoa(n-1)), false)
	case len(parts) == 4 && parts[0] == "g" && parts[2] == "1" && !members:
		return c.resultOf(ctx, id, child(path, "cb"), false)
	case len(parts) == 4 && parts[0] == "g":
		n, _ := strconv.Atoi(parts[1])
		if n > MaxInlineResults {
			return nil, fmt.Errorf("%w: group %s has %d members; use Results and GroupResults.Each", ErrTooManyResults, path, n)
		}
		g := &GroupResults{c: c, id: id, group: path, Total: n}
		out := make([]json.RawMessage, 0, n)
		err := g.Each(ctx, func(member int, result []byte, failure string) error {
			if failure == "" && len(result) == 0 {
				// A member that is a chain or a group: resolve it.
				b, err := c.resultOf(ctx, id, child(path, "m"+strconv.Itoa(member)), false)
				if err != nil {
					return err
				}
				result = b
			}
			out = append(out, jsonValue(result, failure))
			return nil
		})
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
	b, err := c.rdb.HGet(ctx, k[kRes], path).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workflow: result of %s: %w", path, err)
	}
	return b, nil
}

// jsonValue returns result as a JSON value: itself when it is JSON, else
// a JSON string; null for a failed member or no result.
func jsonValue(result []byte, failure string) json.RawMessage {
	switch {
	case failure != "" || len(result) == 0:
		return json.RawMessage("null")
	case json.Valid(result):
		return json.RawMessage(result)
	}
	b, _ := json.Marshal(string(result))
	return b
}

// GroupResults are the outcomes of a group's members, as its callback
// (or the stage after a group without one) reads them with Results.
type GroupResults struct {
	// Total is the number of members; Succeeded and Failed how many
	// succeeded and failed.
	Total, Succeeded, Failed int
	// Failures lists up to MaxListedFailures failed members, in member
	// order.
	Failures []Failure

	c         *Client
	id, group string
	fixed     [][]byte       // WithResults
	failed    map[int]string // WithResults
}

// Failure is a failed member of a group.
type Failure struct {
	// Member is the member's index in the group; Step the path of the
	// task step that failed (the member itself, or a step of the chain
	// it is).
	Member int    `json:"member"`
	Step   string `json:"step"`
	Error  string `json:"error"`
}

// Results returns the outcomes of the members of the group the step
// running under ctx closes: the group whose callback it is (or is a step
// of), or the group that is the stage before it. Errors: ErrNotInWorkflow, ErrNoPrevious
// (no group before the step), or Redis's.
func Results(ctx context.Context) (*GroupResults, error) {
	s, ok := ctx.Value(stepKey{}).(*stepCtx)
	if !ok {
		return nil, ErrNotInWorkflow
	}
	if s.fixed {
		if s.results == nil {
			return nil, ErrNotInWorkflow
		}
		return s.results, nil
	}
	group, _, err := prevStage(s.path)
	if err != nil {
		return nil, err
	}
	k := keys(s.id)
	var (
		shape *redis.StringCmd
		fails *redis.StringCmd
	)
	_, err = s.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		shape = p.HGet(ctx, k[kShape], group)
		fails = p.HGet(ctx, k[kCnt], group+":f")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("workflow: results: %w", err)
	}
	if !strings.HasPrefix(shape.Val(), "g:") {
		return nil, fmt.Errorf("%w: the stage before step %s is not a group", ErrNoPrevious, s.path)
	}
	n, _ := strconv.Atoi(strings.Split(shape.Val(), ":")[1])
	failed, _ := strconv.Atoi(fails.Val())
	g := &GroupResults{Total: n, Failed: failed, Succeeded: n - failed, c: s.c, id: s.id, group: group}
	if failed > 0 {
		err := g.Each(ctx, func(member int, _ []byte, failure string) error {
			if failure == "" {
				return nil
			}
			step, msg, _ := strings.Cut(failure, "\n")
			g.Failures = append(g.Failures, Failure{Member: member, Step: step, Error: msg})
			if len(g.Failures) == MaxListedFailures || len(g.Failures) == failed {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return nil, err
		}
	}
	return g, nil
}

var errStop = errors.New("stop")

// Results returns the members' results in member order as JSON values
// (null for a failed member or one with no result); ErrTooManyResults
// for more than MaxInlineResults members.
func (g *GroupResults) Results(ctx context.Context) ([]json.RawMessage, error) {
	if g.Total > MaxInlineResults {
		return nil, fmt.Errorf("%w: %d members; use Each", ErrTooManyResults, g.Total)
	}
	out := make([]json.RawMessage, 0, g.Total)
	err := g.Each(ctx, func(_ int, result []byte, failure string) error {
		out = append(out, jsonValue(result, failure))
		return nil
	})
	return out, err
}

// Each calls fn with every member's index, result and failure ("" when it
// succeeded; "<step>\n<error>" when it failed), in member order, reading
// them a thousand at a time. An error from fn stops it and is returned.
func (g *GroupResults) Each(ctx context.Context, fn func(member int, result []byte, failure string) error) error {
	if g.c == nil {
		for i, r := range g.fixed {
			failure := ""
			if e, ok := g.failed[i]; ok {
				failure, r = child(g.group, "m"+strconv.Itoa(i))+"\n"+e, nil
			}
			if err := fn(i, r, failure); err != nil {
				return err
			}
		}
		return nil
	}
	k := keys(g.id)
	for from := 0; from < g.Total; from += MaxInlineResults {
		to := min(from+MaxInlineResults, g.Total)
		fields := make([]string, 0, to-from)
		for i := from; i < to; i++ {
			fields = append(fields, child(g.group, "m"+strconv.Itoa(i)))
		}
		var res, errs *redis.SliceCmd
		if _, err := g.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			res = p.HMGet(ctx, k[kRes], fields...)
			errs = p.HMGet(ctx, k[kErr], fields...)
			return nil
		}); err != nil {
			return fmt.Errorf("workflow: results of %s: %w", g.group, err)
		}
		for i := range fields {
			r, _ := res.Val()[i].(string)
			e, _ := errs.Val()[i].(string)
			if err := fn(from+i, []byte(r), e); err != nil {
				return err
			}
		}
	}
	return nil
}
