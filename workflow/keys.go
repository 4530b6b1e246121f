package workflow

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keys in Redis. A workflow's own keys share the hash tag {<id>}, so they
// live in one hash slot and every script on them is atomic on a Redis
// Cluster too; the two indexes are keys of their own.
const (
	// KeyPrefix begins every workflow key.
	KeyPrefix = "forgeq:wf:"
	// RecentKey is the sorted set of workflow ids by creation time (Unix
	// milliseconds), for listings; ids whose record expired are dropped
	// as listings meet them.
	RecentKey = KeyPrefix + "recent"
	// RunningKey is the sorted set of workflows that are not final, by
	// when the reconciler next looks at them (Unix milliseconds).
	RunningKey = KeyPrefix + "running"
	// CancelChannel is the Pub/Sub channel Cancel publishes a cancelled
	// workflow's id on, so that workers stop starting its steps at once
	// (a Redis ACL user needs &forgeq:wf:cancelled, or &*).
	CancelChannel = KeyPrefix + "cancelled"
	// MaxRecent is how many workflows RecentKey keeps at most.
	MaxRecent = 10_000
)

// taskIDPrefix begins the asynq task id of every workflow step:
// "wf:<workflow id>:<path>".
const taskIDPrefix = "wf:"

// TaskID returns the asynq task id of the step at path of workflow id.
func TaskID(id, path string) string { return taskIDPrefix + id + ":" + path }

// parseTaskID returns the workflow id and step path of a step's task id.
func parseTaskID(taskID string) (id, path string, ok bool) {
	rest, ok := strings.CutPrefix(taskID, taskIDPrefix)
	if !ok {
		return "", "", false
	}
	id, path, ok = strings.Cut(rest, ":")
	if !ok || id == "" || path == "" || checkID(id) != nil {
		return "", "", false
	}
	return id, path, true
}

// keys returns the keys of workflow id, in the order the scripts take
// them (lib.lua), then the list of its task paths in tree order.
func keys(id string) []string {
	base := KeyPrefix + "{" + id + "}"
	return []string{base, base + ":shape", base + ":spec", base + ":act", base + ":done", base + ":cnt", base + ":res", base + ":err", base + ":order"}
}

// Indexes into keys(id).
const (
	kMeta = iota
	kShape
	kSpec
	kAct
	kDone
	kCnt
	kRes
	kErr
	kOrder
)

// checkID checks a workflow id: 1 to MaxIDLen of A-Z a-z 0-9 . _ -.
func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("workflow id %q: must be 1 to %d characters", id, MaxIDLen)
	}
	for i := range len(id) {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("workflow id %q: only A-Z a-z 0-9 . _ - are allowed", id)
		}
	}
	return nil
}

var (
	//go:embed lib.lua
	libLua string
	//go:embed submit.lua
	submitLua string
	//go:embed begin.lua
	beginLua string
	//go:embed complete.lua
	completeLua string
	//go:embed cancel.lua
	cancelLua string
	//go:embed scan.lua
	scanLua string

	submitScript   = redis.NewScript(libLua + submitLua)
	beginScript    = redis.NewScript(libLua + beginLua)
	completeScript = redis.NewScript(libLua + completeLua)
	cancelScript   = redis.NewScript(libLua + cancelLua)
	scanScript     = redis.NewScript(libLua + scanLua)
)

// scriptReply is a script's reply: code, status, then (path, value) pairs.
type scriptReply struct {
	code, status string
	pairs        []string
}

func parseReply(v any, err error) (scriptReply, error) {
	if err != nil {
		return scriptReply{}, err
	}
	a, ok := v.([]any)
	if !ok || len(a) < 1 {
		return scriptReply{}, errors.New("workflow: unexpected script reply")
	}
	r := scriptReply{}
	r.code, _ = a[0].(string)
	if len(a) > 1 {
		r.status, _ = a[1].(string)
	}
	for _, x := range a[min(2, len(a)):] {
		s, _ := x.(string)
		r.pairs = append(r.pairs, s)
	}
	return r, nil
}

func redisZRangeDue(now time.Time) redis.ZRangeArgs {
	return redis.ZRangeArgs{Key: RunningKey, Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10), ByScore: true, Count: 100}
}

func redisZ(id string, at time.Time) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: id}
}

// taskSpecLite is the part of a step's spec the reconciler needs.
type taskSpecLite struct {
	Queue string `json:"queue"`
}

func decodeSpec(spec string, s *taskSpecLite) error {
	if err := json.Unmarshal([]byte(spec), s); err != nil {
		return fmt.Errorf("decode step: %w", err)
	}
	return nil
}
