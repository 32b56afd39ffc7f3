package telemetry

import (
	"context"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the traceparent
// header "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>" and the
// tracestate header, parsed and generated here without an OpenTelemetry SDK.

// TraceID and SpanID are W3C trace and span identifiers.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// IsValid reports whether id is not all zeros.
func (id TraceID) IsValid() bool { return id != TraceID{} }

// IsValid reports whether id is not all zeros.
func (id SpanID) IsValid() bool { return id != SpanID{} }

func (id TraceID) String() string { return hex.EncodeToString(id[:]) }
func (id SpanID) String() string  { return hex.EncodeToString(id[:]) }

// FlagSampled is the traceparent flag that says the caller records the trace.
const FlagSampled byte = 0x01

// SpanContext is what travels between processes.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	Flags   byte
	// State is the tracestate header, passed on unchanged.
	State string
}

// Sampled reports the sampled flag.
func (sc SpanContext) Sampled() bool { return sc.Flags&FlagSampled != 0 }

// IsValid reports whether both ids are set.
func (sc SpanContext) IsValid() bool { return sc.TraceID.IsValid() && sc.SpanID.IsValid() }

// Traceparent formats sc as a version-00 traceparent header value.
func (sc SpanContext) Traceparent() string {
	var b [55]byte
	return string(sc.appendTraceparent(b[:0]))
}

// appendTraceparent appends the 55-byte traceparent value to dst.
func (sc SpanContext) appendTraceparent(dst []byte) []byte {
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, sc.TraceID[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, sc.SpanID[:])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, []byte{sc.Flags})
}

// ParseTraceparent reads a traceparent header value. Per the W3C rules it
// accepts future versions (keeping the known fields) but not version ff,
// upper-case hex, or all-zero ids.
func ParseTraceparent(s string) (SpanContext, bool) {
	var sc SpanContext
	s = strings.TrimSpace(s)
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return sc, false
	}
	var ver [1]byte
	if !lowerHex(s[0:2]) || hexDecode(ver[:], s[0:2]) != nil || ver[0] == 0xff {
		return sc, false
	}
	if ver[0] == 0 && len(s) != 55 {
		return sc, false
	}
	if len(s) > 55 && s[55] != '-' {
		return sc, false
	}
	var flags [1]byte
	if !lowerHex(s[3:35]) || !lowerHex(s[36:52]) || !lowerHex(s[53:55]) ||
		hexDecode(sc.TraceID[:], s[3:35]) != nil || hexDecode(sc.SpanID[:], s[36:52]) != nil || hexDecode(flags[:], s[53:55]) != nil {
		return SpanContext{}, false
	}
	sc.Flags = flags[0]
	if !sc.IsValid() {
		return SpanContext{}, false
	}
	return sc, true
}

func hexDecode(dst []byte, s string) error {
	_, err := hex.Decode(dst, []byte(s))
	return err
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidTracestate reports whether s is a tracestate value that may be passed
// on: at most 32 comma-separated key=value members and 512 characters.
func ValidTracestate(s string) bool {
	if len(s) > 512 {
		return false
	}
	if strings.TrimSpace(s) == "" {
		return true
	}
	members := strings.Split(s, ",")
	if len(members) > 32 {
		return false
	}
	for _, m := range members {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		k, v, ok := strings.Cut(m, "=")
		if !ok || k == "" || v == "" || len(k) > 256 || len(v) > 256 {
			return false
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=' {
				return false
			}
		}
	}
	return true
}

func newTraceID() (id TraceID) {
	for !id.IsValid() {
		a, b := rand.Uint64(), rand.Uint64()
		for i := range 8 {
			id[i], id[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
		}
	}
	return id
}

func newSpanID() (id SpanID) {
	for !id.IsValid() {
		a := rand.Uint64()
		for i := range 8 {
			id[i] = byte(a >> (8 * i))
		}
	}
	return id
}

// SpanKind is the OTLP span kind.
type SpanKind int

// OTLP span kinds.
const (
	KindInternal SpanKind = 1
	KindServer   SpanKind = 2
	KindClient   SpanKind = 3
	KindProducer SpanKind = 4
	KindConsumer SpanKind = 5
)

// StatusCode is the OTLP span status.
type StatusCode int

// OTLP status codes.
const (
	StatusUnset StatusCode = 0
	StatusOK    StatusCode = 1
	StatusError StatusCode = 2
)

// Attr is a span attribute; build it with String, Int, Float or Bool.
type Attr struct {
	Key  string
	kind uint8
	s    string
	n    int64 // an int, a bool (1 or 0) or a float's bits
}

// float is a Float attribute's value.
func (a Attr) float() float64 { return math.Float64frombits(uint64(a.n)) }

const (
	attrString uint8 = iota
	attrInt
	attrFloat
	attrBool
)

// String is a string attribute.
func String(k, v string) Attr { return Attr{Key: k, kind: attrString, s: v} }

// Int is an integer attribute.
func Int(k string, v int64) Attr { return Attr{Key: k, kind: attrInt, n: v} }

// Float is a floating-point attribute.
func Float(k string, v float64) Attr {
	return Attr{Key: k, kind: attrFloat, n: int64(math.Float64bits(v))}
}

// Bool is a boolean attribute.
func Bool(k string, v bool) Attr {
	a := Attr{Key: k, kind: attrBool}
	if v {
		a.n = 1
	}
	return a
}

// Span is one timed operation of a trace. A span that is not recorded (no
// exporter, or not sampled) still carries ids, so that the traceparent passed
// on stays connected; its other methods are then no-ops.
type Span struct {
	tracer *Tracer
	sc     SpanContext
	parent SpanID
	// recorded fields, set only when the span is recorded.
	recording bool
	name      string
	kind      SpanKind
	start     int64 // Unix nanoseconds, all the export needs of a time
	end       int64
	attrs     []Attr
	status    StatusCode
	message   string
	ended     atomic.Bool
	// Held in the span's own allocation: room for the gateway's attributes,
	// and the traceparent header value Inject puts on a request. (Room for
	// two, not four, keeps the span in a smaller allocation size class.)
	attrBuf [2]Attr
	tpBuf   [55]byte
	tpHdr   [1]string
}

// spanContext is the context that carries a span: one allocation for both.
type spanContext struct {
	context.Context
	span Span
}

type spanKey struct{}

func (c *spanContext) Value(key any) any {
	if key == (spanKey{}) {
		return &c.span
	}
	return c.Context.Value(key)
}

// FromContext returns the span ctx carries, or nil.
func FromContext(ctx context.Context) *Span {
	if ctx == nil {
		return nil
	}
	s, _ := ctx.Value(spanKey{}).(*Span)
	return s
}

// TraceparentFrom returns the traceparent of the span in ctx, or "".
func TraceparentFrom(ctx context.Context) string {
	if s := FromContext(ctx); s != nil {
		return s.Traceparent()
	}
	return ""
}

// Context is the span's ids, for propagation.
func (s *Span) Context() SpanContext { return s.sc }

// Traceparent is the header value to pass into functions and out through
// host-API calls: this span as the parent.
func (s *Span) Traceparent() string { return s.tpHdr[0] }

// setTraceparentHeader makes the span's traceparent header value in the
// span's own memory, once its ids are set (StartSpan): Inject then
// allocates nothing, and concurrent Injects only read it.
func (s *Span) setTraceparentHeader() {
	s.sc.appendTraceparent(s.tpBuf[:0])
	s.tpHdr[0] = unsafe.String(&s.tpBuf[0], len(s.tpBuf))
}

// Tracestate is the incoming tracestate, passed on unchanged.
func (s *Span) Tracestate() string { return s.sc.State }

// SetTracestate sets the tracestate passed on (the incoming header); an
// invalid value is ignored, as W3C asks.
func (s *Span) SetTracestate(state string) {
	if ValidTracestate(state) {
		s.sc.State = state
	}
}

// IsRecording reports whether the span will be exported.
func (s *Span) IsRecording() bool { return s.recording }

// SetKind sets the OTLP span kind (default internal).
func (s *Span) SetKind(k SpanKind) {
	if s.recording {
		s.kind = k
	}
}

// SetAttrs adds attributes.
func (s *Span) SetAttrs(attrs ...Attr) {
	if s.recording && !s.ended.Load() {
		s.attrs = append(s.attrs, attrs...)
	}
}

// Fail marks the span as failed with a message; End keeps the error status.
func (s *Span) Fail(message string) {
	if s.recording {
		s.status, s.message = StatusError, message
	}
}

// End finishes the span with status (unless Fail set an error) and hands it
// to the exporter. Ending twice has no effect.
func (s *Span) End(status StatusCode) {
	if !s.recording || s.ended.Swap(true) {
		return
	}
	s.end = time.Now().UnixNano()
	if s.status != StatusError {
		s.status = status
	}
	s.tracer.export(s)
}

// W3C header names.
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// StartServerSpan starts a server span for an incoming request whose headers
// are h: the caller's traceparent and tracestate are followed.
func (t *Tracer) StartServerSpan(ctx context.Context, name string, h http.Header, attrs ...Attr) (context.Context, *Span) {
	ctx, s := t.StartSpan(ctx, name, first(h[HeaderTraceparent]), attrs...)
	if ts := first(h[HeaderTracestate]); ts != "" && s.parent.IsValid() {
		s.SetTracestate(ts)
	}
	s.SetKind(KindServer)
	return ctx, s
}

// first is h.Get of a canonical key, without canonicalizing it again.
func first(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// Inject sets the traceparent (and tracestate) of the span in ctx on h, for
// a request going out (into a function, or out through the host API).
func Inject(ctx context.Context, h http.Header) {
	s := FromContext(ctx)
	if s == nil {
		return
	}
	h[HeaderTraceparent] = s.tpHdr[:]
	if s.sc.State != "" {
		h.Set(HeaderTracestate, s.sc.State)
	}
}
