package otlptest

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Span is one span as a receiver got it, decoded from OTLP. Ids are
// lower-case hex; ParentSpanID is "" for a root span.
type Span struct {
	// Service is the service.name attribute of the span's resource.
	Service string
	// Resource holds every attribute of the span's resource.
	Resource map[string]any
	// Scope is the name of the instrumentation scope (the tracer's name).
	Scope string

	TraceID      string
	SpanID       string
	ParentSpanID string
	Name         string
	Kind         trace.SpanKind
	Start, End   time.Time
	// Attrs holds the span's attributes: string, bool, int64, float64,
	// []byte, []any or map[string]any values.
	Attrs  map[string]any
	Events []Event
	Links  []Link
	Status codes.Code
	// StatusMessage is the status description, set with an error status.
	StatusMessage string
}

// Event is a span event.
type Event struct {
	Name  string
	Time  time.Time
	Attrs map[string]any
}

// Link is a span link, ids in hex.
type Link struct {
	TraceID string
	SpanID  string
	Attrs   map[string]any
}

// Attr returns the attribute key of s formatted with %v, and whether s has
// it.
func (s Span) Attr(key string) (string, bool) {
	v, ok := s.Attrs[key]
	if !ok {
		return "", false
	}
	return fmt.Sprint(v), true
}

// HasEvent reports whether s has an event named name.
func (s Span) HasEvent(name string) bool {
	return slices.ContainsFunc(s.Events, func(e Event) bool { return e.Name == name })
}

// ChildOf reports whether s is a direct child of p: same trace, and p's id
// as its parent.
func (s Span) ChildOf(p Span) bool {
	return s.TraceID == p.TraceID && s.ParentSpanID != "" && s.ParentSpanID == p.SpanID
}

// String returns a one-line description: service, kind, name, ids.
func (s Span) String() string {
	return fmt.Sprintf("%s %s %q span=%s parent=%s trace=%s",
		s.Service, s.Kind, s.Name, s.SpanID, orDash(s.ParentSpanID), s.TraceID)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Spans is a list of spans, with finders. Its methods never modify it.
type Spans []Span

// Match returns the spans for which match is true, in order.
func (ss Spans) Match(match func(Span) bool) Spans {
	var out Spans
	for _, s := range ss {
		if match(s) {
			out = append(out, s)
		}
	}
	return out
}

// Named returns the spans called name.
func (ss Spans) Named(name string) Spans { return ss.Match(Named(name)) }

// InTrace returns the spans of the trace traceID.
func (ss Spans) InTrace(traceID string) Spans {
	return ss.Match(func(s Span) bool { return s.TraceID == traceID })
}

// ByID returns the span with the id spanID (in the trace traceID when
// traceID is not ""), and whether there is one.
func (ss Spans) ByID(traceID, spanID string) (Span, bool) {
	for _, s := range ss {
		if s.SpanID == spanID && (traceID == "" || s.TraceID == traceID) {
			return s, true
		}
	}
	return Span{}, false
}

// Parent returns the parent of s among ss, and whether it is there.
func (ss Spans) Parent(s Span) (Span, bool) {
	if s.ParentSpanID == "" {
		return Span{}, false
	}
	return ss.ByID(s.TraceID, s.ParentSpanID)
}

// Children returns the direct children of p among ss.
func (ss Spans) Children(p Span) Spans {
	return ss.Match(func(s Span) bool { return s.ChildOf(p) })
}

// HasAncestor reports whether ancestor is the parent of s, or the parent
// of its parent, and so on, following the parents found in ss.
func (ss Spans) HasAncestor(s, ancestor Span) bool {
	seen := make(map[string]bool)
	for !seen[s.SpanID] {
		seen[s.SpanID] = true
		if s.ChildOf(ancestor) {
			return true
		}
		p, ok := ss.Parent(s)
		if !ok {
			return false
		}
		s = p
	}
	return false // a cycle: not a tree
}

// TraceIDs returns the distinct trace ids of ss, in order of first
// appearance.
func (ss Spans) TraceIDs() []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s.TraceID) {
			out = append(out, s.TraceID)
		}
	}
	return out
}

// Services returns the distinct service names of ss, sorted.
func (ss Spans) Services() []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s.Service) {
			out = append(out, s.Service)
		}
	}
	slices.Sort(out)
	return out
}

// String prints ss as trees, one per trace: each span under its parent,
// children in order of start time; a span whose parent is not in ss is
// printed as a root, marked with the missing parent's id.
func (ss Spans) String() string {
	var b strings.Builder
	for _, tid := range ss.TraceIDs() {
		t := ss.InTrace(tid)
		slices.SortStableFunc(t, func(a, b Span) int { return a.Start.Compare(b.Start) })
		fmt.Fprintf(&b, "trace %s\n", tid)
		printed := make(map[string]bool)
		var walk func(s Span, depth int)
		walk = func(s Span, depth int) {
			if printed[s.SpanID] {
				return
			}
			printed[s.SpanID] = true
			fmt.Fprintf(&b, "%s- [%s] %s %q (%s)", strings.Repeat("  ", depth+1), s.Service, s.Kind, s.Name, s.SpanID)
			if _, ok := t.Parent(s); !ok && s.ParentSpanID != "" {
				fmt.Fprintf(&b, " parent %s not received", s.ParentSpanID)
			}
			if s.Status == codes.Error {
				fmt.Fprintf(&b, " ERROR %q", s.StatusMessage)
			}
			b.WriteByte('\n')
			for _, c := range t.Children(s) {
				walk(c, depth+1)
			}
		}
		for _, s := range t {
			if _, ok := t.Parent(s); !ok {
				walk(s, 0)
			}
		}
		for _, s := range t { // spans in a parent cycle
			walk(s, 0)
		}
	}
	return b.String()
}

// Named returns a matcher of the spans called name.
func Named(name string) func(Span) bool {
	return func(s Span) bool { return s.Name == name }
}

// spansOf flattens a request's resource and scope spans.
func spansOf(rss []*tracepb.ResourceSpans) []Span {
	var out []Span
	for _, rs := range rss {
		res := attrMap(rs.GetResource().GetAttributes())
		service, _ := res["service.name"].(string)
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, sp := range ss.GetSpans() {
				s := Span{
					Service:      service,
					Resource:     res,
					Scope:        scope,
					TraceID:      hex.EncodeToString(sp.GetTraceId()),
					SpanID:       hex.EncodeToString(sp.GetSpanId()),
					ParentSpanID: hex.EncodeToString(sp.GetParentSpanId()),
					Name:         sp.GetName(),
					// OTLP's kinds have trace.SpanKind's numbers.
					Kind:          trace.SpanKind(sp.GetKind()),
					Start:         unixNano(sp.GetStartTimeUnixNano()),
					End:           unixNano(sp.GetEndTimeUnixNano()),
					Attrs:         attrMap(sp.GetAttributes()),
					Status:        statusCode(sp.GetStatus().GetCode()),
					StatusMessage: sp.GetStatus().GetMessage(),
				}
				for _, e := range sp.GetEvents() {
					s.Events = append(s.Events, Event{
						Name:  e.GetName(),
						Time:  unixNano(e.GetTimeUnixNano()),
						Attrs: attrMap(e.GetAttributes()),
					})
				}
				for _, l := range sp.GetLinks() {
					s.Links = append(s.Links, Link{
						TraceID: hex.EncodeToString(l.GetTraceId()),
						SpanID:  hex.EncodeToString(l.GetSpanId()),
						Attrs:   attrMap(l.GetAttributes()),
					})
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// statusCode maps OTLP's status codes, whose numbers differ from codes.Code's.
func statusCode(c tracepb.Status_StatusCode) codes.Code {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return codes.Ok
	case tracepb.Status_STATUS_CODE_ERROR:
		return codes.Error
	default:
		return codes.Unset
	}
}

func unixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n))
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	out := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		out[kv.GetKey()] = anyValue(kv.GetValue())
	}
	return out
}

func anyValue(v *commonpb.AnyValue) any {
	switch v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return v.GetStringValue()
	case *commonpb.AnyValue_BoolValue:
		return v.GetBoolValue()
	case *commonpb.AnyValue_IntValue:
		return v.GetIntValue()
	case *commonpb.AnyValue_DoubleValue:
		return v.GetDoubleValue()
	case *commonpb.AnyValue_BytesValue:
		return v.GetBytesValue()
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range v.GetArrayValue().GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrMap(v.GetKvlistValue().GetValues())
	default:
		return nil
	}
}
