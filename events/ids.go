package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Event IDs and stream positions.
//
// A stream entry holds the events of one write (see Publisher), and its id
// "<ms>-<seq>" is a position in the stream: after it means after every
// event of the entry. An event's ID is its entry's id and its index in the
// entry, "<ms>-<seq>:<index>": after it means after that event, which may
// be before the entry's other events.

// pos is a position in a stream: after event idx of entry (ms, seq), or
// after the whole entry when whole is set.
type pos struct {
	ms, seq uint64
	idx     int
	whole   bool
}

// maxIndex bounds the index part of an event ID: an entry holds at most
// maxPack events.
const maxIndex = 1 << 16

// parsePos reads an event ID or an entry id.
func parsePos(id string) (pos, bool) {
	entry, idx, hasIdx := strings.Cut(id, ":")
	ms, seq, ok := parseID(entry)
	if !ok {
		return pos{}, false
	}
	if !hasIdx {
		return pos{ms: ms, seq: seq, whole: true}, true
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i >= maxIndex || idx != strconv.Itoa(i) {
		return pos{}, false
	}
	return pos{ms: ms, seq: seq, idx: i}, true
}

// entryID returns p's entry id.
func (p pos) entryID() string {
	return strconv.FormatUint(p.ms, 10) + "-" + strconv.FormatUint(p.seq, 10)
}

// CheckID returns an error naming id when it is neither an event's ID
// (Event.ID, "<ms>-<seq>:<index>") nor a stream position (an entry id,
// "<ms>-<seq>", as LastID returns): what Watch and HasNewer take as after.
func CheckID(id string) error {
	if _, ok := parsePos(id); !ok {
		return fmt.Errorf("events: %q is not an event id (such as 1733571234567-0:0) or a stream position (such as 1733571234567-0)", id)
	}
	return nil
}

// eventID returns the ID of event idx of entry id.
func eventID(entry string, idx int) string { return entry + ":" + strconv.Itoa(idx) }

// parseID splits a stream entry id "ms-seq" (or "ms", seq 0).
func parseID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	if !found {
		return ms, 0, err1 == nil
	}
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// nextID returns the smallest entry id after id, for an exclusive XRANGE
// start that works on every Redis version.
func nextID(id string) string {
	ms, seq, _ := parseID(id)
	if seq == ^uint64(0) {
		return strconv.FormatUint(ms+1, 10) + "-0"
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
}

// prevID returns the largest entry id before id, "" for none.
func prevID(id string) string {
	ms, seq, _ := parseID(id)
	switch {
	case seq > 0:
		return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq-1, 10)
	case ms > 0:
		return strconv.FormatUint(ms-1, 10) + "-" + strconv.FormatUint(^uint64(0), 10)
	}
	return ""
}

// before reports whether p comes before q.
func (p pos) before(q pos) bool {
	switch {
	case p.ms != q.ms:
		return p.ms < q.ms
	case p.seq != q.seq:
		return p.seq < q.seq
	case p.whole:
		return false
	case q.whole:
		return true
	}
	return p.idx < q.idx
}
