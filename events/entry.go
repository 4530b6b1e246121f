package events

import (
	"errors"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// A stream entry holds the events of one write to its stream: one field,
// entryField, whose value is the events in the protobuf wire format of
//
//	message Entry { repeated Event events = 1; }
//	message Event {
//	  string kind = 1;
//	  string task_id = 2;
//	  string type = 3;
//	  int64  time_ms = 4;     // when published, unix milliseconds
//	  int64  attempt = 5;
//	  double percent = 6;     // progress (always present in one)
//	  string message = 7;
//	  string error = 8;
//	  int64  next_at_ms = 9;  // retried: unix milliseconds
//	  bytes  result = 10;     // succeeded: at most MaxResultBytes
//	  bool   result_truncated = 11;
//	  string trace_id = 12;
//	}
//
// (the README shows it too, for readers in other languages). The queue is
// the stream's; an event's ID is its entry's id and its index in it.
const entryField = "events"

// Field numbers of Event and Entry.
const (
	pbKind      protowire.Number = 1
	pbTaskID    protowire.Number = 2
	pbType      protowire.Number = 3
	pbTime      protowire.Number = 4
	pbAttempt   protowire.Number = 5
	pbPercent   protowire.Number = 6
	pbMessage   protowire.Number = 7
	pbError     protowire.Number = 8
	pbNextAt    protowire.Number = 9
	pbResult    protowire.Number = 10
	pbTruncated protowire.Number = 11
	pbTrace     protowire.Number = 12

	pbEvent protowire.Number = 1 // Entry.events
)

// Bounds of an entry: at most maxPack events, and no more after the
// events reach packBytes (an event with a long result may make one
// bigger): a full stream takes about MaxLen KiB.
const (
	maxPack   = 64
	packBytes = 1 << 10
)

// appendEvent appends e, as Entry.events, to b; size is e.size().
func appendEvent(b []byte, e *Event, size int) []byte {
	b = protowire.AppendTag(b, pbEvent, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = appendString(b, pbKind, string(e.Kind))
	b = appendString(b, pbTaskID, e.TaskID)
	b = appendString(b, pbType, e.Type)
	if !e.Time.IsZero() {
		b = appendInt(b, pbTime, e.Time.UnixMilli())
	}
	if e.Attempt != 0 {
		b = appendInt(b, pbAttempt, int64(e.Attempt))
	}
	if e.Kind == Progress || e.Percent != 0 {
		b = protowire.AppendTag(b, pbPercent, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(e.Percent))
	}
	b = appendString(b, pbMessage, e.Message)
	b = appendString(b, pbError, e.Error)
	if !e.NextAt.IsZero() {
		b = appendInt(b, pbNextAt, e.NextAt.UnixMilli())
	}
	if r, cut := e.result(); len(r) > 0 {
		b = protowire.AppendTag(b, pbResult, protowire.BytesType)
		b = protowire.AppendBytes(b, r)
		if cut {
			b = appendInt(b, pbTruncated, 1)
		}
	}
	return appendString(b, pbTrace, e.TraceID)
}

// size returns the size of e's Event message (what appendEvent writes
// after the length).
func (e *Event) size() int {
	n := stringSize(pbKind, string(e.Kind)) + stringSize(pbTaskID, e.TaskID) + stringSize(pbType, e.Type) +
		stringSize(pbMessage, e.Message) + stringSize(pbError, e.Error) + stringSize(pbTrace, e.TraceID)
	if !e.Time.IsZero() {
		n += intSize(pbTime, e.Time.UnixMilli())
	}
	if e.Attempt != 0 {
		n += intSize(pbAttempt, int64(e.Attempt))
	}
	if e.Kind == Progress || e.Percent != 0 {
		n += protowire.SizeTag(pbPercent) + protowire.SizeFixed64()
	}
	if !e.NextAt.IsZero() {
		n += intSize(pbNextAt, e.NextAt.UnixMilli())
	}
	if r, cut := e.result(); len(r) > 0 {
		n += protowire.SizeTag(pbResult) + protowire.SizeBytes(len(r))
		if cut {
			n += intSize(pbTruncated, 1)
		}
	}
	return n
}

// result returns the result e carries in the stream: at most
// MaxResultBytes, and whether it was cut.
func (e *Event) result() ([]byte, bool) {
	if len(e.Result) > MaxResultBytes {
		return e.Result[:MaxResultBytes], true
	}
	return e.Result, e.ResultTruncated
}

func appendString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func stringSize(n protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(n) + protowire.SizeBytes(len(s))
}

func appendInt(b []byte, n protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func intSize(n protowire.Number, v int64) int {
	return protowire.SizeTag(n) + protowire.SizeVarint(uint64(v))
}

// errBadEntry is the error of an entry that is not in the format above.
var errBadEntry = errors.New("events: malformed stream entry")

// decodeEntry appends to evs the events of the entry id of queue's stream
// whose entryField value is v, those of task taskID only unless taskID is
// "", and those after index from only. Fields it does not know are
// skipped, for entries written by a later version.
func decodeEntry(evs []Event, queue, id string, v []byte, taskID string, from int) ([]Event, error) {
	for idx := 0; len(v) > 0; idx++ {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return evs, errBadEntry
		}
		v = v[n:]
		if num != pbEvent || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
				return evs, errBadEntry
			}
			v = v[n:]
			idx--
			continue
		}
		m, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return evs, errBadEntry
		}
		v = v[n:]
		if idx < from {
			continue
		}
		if taskID != "" && eventTaskID(m) != taskID {
			continue
		}
		e, err := decodeEvent(m)
		if err != nil {
			return evs, err
		}
		e.ID, e.Queue = eventID(id, idx), queue
		if e.Time.IsZero() {
			if ms, _, ok := parseID(id); ok {
				e.Time = time.UnixMilli(int64(ms)).UTC()
			}
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// eventTaskID returns the task id of Event message m, without decoding
// the rest.
func eventTaskID(m []byte) string {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return ""
		}
		m = m[n:]
		if num == pbTaskID && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(m)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		if n = protowire.ConsumeFieldValue(num, typ, m); n < 0 {
			return ""
		}
		m = m[n:]
	}
	return ""
}

// decodeEvent reads Event message m.
func decodeEvent(m []byte) (Event, error) {
	var e Event
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return e, errBadEntry
		}
		m = m[n:]
		switch {
		case typ == protowire.BytesType && num <= pbTrace:
			v, k := protowire.ConsumeBytes(m)
			if k < 0 {
				return e, errBadEntry
			}
			switch num {
			case pbKind:
				e.Kind = Kind(v)
			case pbTaskID:
				e.TaskID = string(v)
			case pbType:
				e.Type = string(v)
			case pbMessage:
				e.Message = string(v)
			case pbError:
				e.Error = string(v)
			case pbResult:
				e.Result = append([]byte(nil), v...)
			case pbTrace:
				e.TraceID = string(v)
			}
			n = k
		case typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(m)
			if k < 0 {
				return e, errBadEntry
			}
			switch num {
			case pbTime:
				e.Time = time.UnixMilli(int64(v)).UTC()
			case pbAttempt:
				e.Attempt = int(int64(v))
			case pbNextAt:
				e.NextAt = time.UnixMilli(int64(v)).UTC()
			case pbTruncated:
				e.ResultTruncated = v != 0
			}
			n = k
		case typ == protowire.Fixed64Type && num == pbPercent:
			v, k := protowire.ConsumeFixed64(m)
			if k < 0 {
				return e, errBadEntry
			}
			e.Percent, n = math.Float64frombits(v), k
		default:
			if n = protowire.ConsumeFieldValue(num, typ, m); n < 0 {
				return e, errBadEntry
			}
		}
		m = m[n:]
	}
	return e, nil
}

// entryValue returns the entryField value of a stream entry's fields, as
// go-redis reads them.
func entryValue(values map[string]any) ([]byte, bool) {
	s, ok := values[entryField].(string)
	return []byte(s), ok
}
