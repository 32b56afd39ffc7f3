package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TracingConfig configures the tracer. With no Endpoint nothing is recorded or
// exported: spans only carry ids so that traceparent headers stay connected.
type TracingConfig struct {
	// Endpoint is the OTLP/HTTP base URL (http://collector:4318); spans are
	// POSTed to Endpoint + "/v1/traces" (OTEL_EXPORTER_OTLP_ENDPOINT).
	Endpoint string
	// TracesURL, when set, is the full URL spans are POSTed to instead
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
	TracesURL string
	// Protocol is the export encoding: ProtocolProtobuf (the default, as
	// for OpenTelemetry's SDKs) or ProtocolJSON.
	Protocol string
	// ServiceName is the resource's service.name; default "nimbus".
	ServiceName string
	// SampleRatio is the share of new traces recorded (0 means all); a trace
	// that arrives with a traceparent follows its caller's sampled flag.
	SampleRatio float64
	// Headers are added to every export request (an authorization, say).
	Headers map[string]string
	// BatchSize spans per export (default 512); FlushInterval bounds how long
	// a finished span waits (default 2s); Buffer is how many finished spans
	// wait before new ones are dropped (default 4096).
	BatchSize     int
	FlushInterval time.Duration
	Buffer        int
	// Timeout bounds one export request; default 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// The OTLP/HTTP encodings (OTEL_EXPORTER_OTLP_PROTOCOL's values).
const (
	ProtocolProtobuf = "http/protobuf"
	ProtocolJSON     = "http/json"
)

// CheckProtocol returns an error that says what to use when p is neither
// OTLP/HTTP encoding ("" is the default, protobuf).
func CheckProtocol(p string) error {
	switch p {
	case "", ProtocolProtobuf, ProtocolJSON:
		return nil
	case "grpc":
		return fmt.Errorf("OTLP protocol %q: Nimbus exports over OTLP/HTTP only; use %s (the default) or %s, with the collector's HTTP port (4318)", p, ProtocolProtobuf, ProtocolJSON)
	}
	return fmt.Errorf("OTLP protocol %q: use %s (the default) or %s", p, ProtocolProtobuf, ProtocolJSON)
}

// TraceStats counts exported, dropped and failed spans since start.
type TraceStats struct {
	Exported, Dropped, Failed uint64
}

// Tracer starts spans and exports the recorded ones. A nil *Tracer is valid
// and records nothing.
type Tracer struct {
	cfg     TracingConfig
	log     *slog.Logger
	client  *http.Client
	buf     []byte // the export being sent (the run goroutine's)
	spanBuf []byte // the run goroutine's scratch for protobuf exports
	url     string
	on      atomic.Bool // exporting

	// Finished spans wait in pending; the exporter takes them every
	// FlushInterval, or when kicked because a batch is full. No channel
	// operation per span: a channel receive per span woke the exporter's
	// goroutine for every invocation.
	qmu     sync.Mutex
	pending []*Span
	kick    chan struct{}

	exported, dropped, failed atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewTracer builds a tracer; Start starts its exporter.
func NewTracer(cfg TracingConfig) *Tracer {
	if cfg.ServiceName == "" {
		cfg.ServiceName = "nimbus"
	}
	if cfg.SampleRatio <= 0 || cfg.SampleRatio > 1 {
		cfg.SampleRatio = 1
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 2 * time.Second
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Protocol == "" {
		cfg.Protocol = ProtocolProtobuf
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	t := &Tracer{cfg: cfg, log: lg.With("component", "tracing"), client: &http.Client{Timeout: cfg.Timeout}}
	switch {
	case cfg.TracesURL != "":
		t.url = cfg.TracesURL
	case cfg.Endpoint != "":
		t.url = strings.TrimRight(cfg.Endpoint, "/") + "/v1/traces"
	}
	if t.url != "" {
		t.kick = make(chan struct{}, 1)
	}
	return t
}

// Start starts the exporter when an endpoint is configured.
func (t *Tracer) Start(ctx context.Context) error {
	if t == nil || t.url == "" {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return errors.New("tracing: already started")
	}
	rctx, cancel := context.WithCancel(context.Background())
	t.cancel, t.done = cancel, make(chan struct{})
	t.on.Store(true)
	go t.run(rctx, t.done)
	return nil
}

// Stop exports what is buffered and stops the exporter, waiting until ctx ends.
func (t *Tracer) Stop(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	cancel, done := t.cancel, t.done
	t.mu.Unlock()
	if cancel == nil {
		return nil
	}
	t.on.Store(false)
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tracing: stop: %w", ctx.Err())
	}
}

// Stats reports the exporter's counters.
func (t *Tracer) Stats() TraceStats {
	if t == nil {
		return TraceStats{}
	}
	return TraceStats{Exported: t.exported.Load(), Dropped: t.dropped.Load(), Failed: t.failed.Load()}
}

// StartSpan starts a span named name. Its parent is the incoming traceparent
// when parent is a valid one, else the span in ctx, else it starts a new
// trace. The returned context carries the span (FromContext).
func (t *Tracer) StartSpan(ctx context.Context, name string, parent string, attrs ...Attr) (context.Context, *Span) {
	if ctx == nil {
		ctx = context.Background()
	}
	c := &spanContext{Context: ctx}
	s := &c.span
	var psc SpanContext
	ok := false
	if parent != "" {
		psc, ok = ParseTraceparent(parent)
	}
	if !ok {
		if p := FromContext(ctx); p != nil {
			psc, ok = p.sc, true
		}
	}
	exporting := t != nil && t.on.Load()
	if ok {
		s.sc = SpanContext{TraceID: psc.TraceID, Flags: psc.Flags, State: psc.State}
		s.parent = psc.SpanID
	} else {
		s.sc.TraceID = newTraceID()
		if exporting && (t.cfg.SampleRatio >= 1 || rand.Float64() < t.cfg.SampleRatio) {
			s.sc.Flags = FlagSampled
		}
	}
	s.sc.SpanID = newSpanID()
	s.setTraceparentHeader()
	if exporting && s.sc.Sampled() {
		s.tracer, s.recording = t, true
		s.name, s.kind, s.start = name, KindInternal, time.Now().UnixNano()
		if len(attrs) > 0 {
			s.attrs = append(s.attrBuf[:0], attrs...)
		}
	}
	return c, s
}

// export queues a finished span without blocking.
func (t *Tracer) export(s *Span) {
	if !t.on.Load() {
		t.dropped.Add(1)
		return
	}
	t.qmu.Lock()
	if len(t.pending) >= t.cfg.Buffer {
		t.qmu.Unlock()
		t.dropped.Add(1)
		return
	}
	t.pending = append(t.pending, s)
	full := len(t.pending)%t.cfg.BatchSize == 0
	t.qmu.Unlock()
	if full {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// take returns the finished spans and leaves spare (emptied) in their place.
func (t *Tracer) take(spare []*Span) []*Span {
	t.qmu.Lock()
	out := t.pending
	t.pending = spare[:0]
	t.qmu.Unlock()
	return out
}

func (t *Tracer) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(t.cfg.FlushInterval)
	defer tick.Stop()
	var spare []*Span
	// Each export gets its own timeout, never the run context: Stop cancels
	// that, and must let an export already under way finish.
	flush := func() {
		taken := t.take(spare)
		for spans := taken; len(spans) > 0; {
			n := min(len(spans), t.cfg.BatchSize)
			sctx, cancel := context.WithTimeout(context.Background(), t.cfg.Timeout)
			t.send(sctx, spans[:n])
			cancel()
			spans = spans[n:]
		}
		clear(taken) // the spans go to the garbage collector
		spare = taken[:0]
	}
	for {
		select {
		case <-t.kick:
			flush()
		case <-tick.C:
			flush()
		case <-ctx.Done():
			flush()
			return
		}
	}
}

func (t *Tracer) send(ctx context.Context, spans []*Span) {
	contentType := "application/x-protobuf"
	if t.cfg.Protocol == ProtocolJSON {
		contentType = "application/json"
		t.buf = t.appendExport(t.buf[:0], spans)
	} else {
		t.buf, t.spanBuf = t.appendExportProto(t.buf[:0], t.spanBuf, spans)
	}
	err := t.post(ctx, t.buf, contentType)
	if err != nil {
		t.failed.Add(uint64(len(spans)))
		t.log.Warn("exporting trace spans failed", "endpoint", t.url, "spans", len(spans), "error", err)
		return
	}
	t.exported.Add(uint64(len(spans)))
}

func (t *Tracer) post(ctx context.Context, body []byte, contentType string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range t.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("collector answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// The OTLP/HTTP JSON encoding (opentelemetry-proto, JSON mapping; the
// binary encoding is in otlp_proto.go): ids are
// hex strings, 64-bit integers are decimal strings, enums are numbers.

// appendExport appends the OTLP/HTTP JSON export of spans to b: the same
// document json.Marshal(t.encode(spans)) gives, written directly (the
// reflective encoder cost several µs per span on the exporter's goroutine,
// which shares the CPU with invocations).
func (t *Tracer) appendExport(b []byte, spans []*Span) []byte {
	b = append(b, `{"resourceSpans":[{"resource":{"attributes":`...)
	b = appendAttrs(b, []Attr{String("service.name", t.cfg.ServiceName)})
	b = append(b, `},"scopeSpans":[{"scope":{"name":"`+scopeName+`"},"spans":[`...)
	var hexbuf [32]byte
	for i, s := range spans {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"traceId":"`...)
		hex.Encode(hexbuf[:32], s.sc.TraceID[:])
		b = append(b, hexbuf[:32]...)
		b = append(b, `","spanId":"`...)
		hex.Encode(hexbuf[:16], s.sc.SpanID[:])
		b = append(b, hexbuf[:16]...)
		b = append(b, '"')
		if s.parent.IsValid() {
			b = append(b, `,"parentSpanId":"`...)
			hex.Encode(hexbuf[:16], s.parent[:])
			b = append(b, hexbuf[:16]...)
			b = append(b, '"')
		}
		if s.sc.State != "" {
			b = append(b, `,"traceState":`...)
			b = appendJSONString(b, s.sc.State)
		}
		if s.sc.Flags != 0 {
			b = append(b, `,"flags":`...)
			b = strconv.AppendUint(b, uint64(s.sc.Flags), 10)
		}
		b = append(b, `,"name":`...)
		b = appendJSONString(b, s.name)
		b = append(b, `,"kind":`...)
		b = strconv.AppendInt(b, int64(s.kind), 10)
		b = append(b, `,"startTimeUnixNano":"`...)
		b = strconv.AppendUint(b, uint64(s.start), 10)
		b = append(b, `","endTimeUnixNano":"`...)
		b = strconv.AppendUint(b, uint64(s.end), 10)
		b = append(b, '"')
		if len(s.attrs) > 0 {
			b = append(b, `,"attributes":`...)
			b = appendAttrs(b, s.attrs)
		}
		b = append(b, `,"status":{`...)
		if s.status != 0 {
			b = append(b, `"code":`...)
			b = strconv.AppendInt(b, int64(s.status), 10)
		}
		if s.message != "" {
			if s.status != 0 {
				b = append(b, ',')
			}
			b = append(b, `"message":`...)
			b = appendJSONString(b, s.message)
		}
		b = append(b, "}}"...)
	}
	return append(b, "]}]}]}"...)
}

func appendAttrs(b []byte, attrs []Attr) []byte {
	b = append(b, '[')
	for i, a := range attrs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = appendJSONString(b, a.Key)
		b = append(b, `,"value":{`...)
		switch a.kind {
		case attrString:
			b = append(b, `"stringValue":`...)
			b = appendJSONString(b, a.s)
		case attrInt:
			b = append(b, `"intValue":"`...)
			b = strconv.AppendInt(b, a.n, 10)
			b = append(b, '"')
		case attrFloat:
			b = append(b, `"doubleValue":`...)
			switch f := a.float(); {
			case math.IsNaN(f):
				b = append(b, `"NaN"`...) // the protobuf JSON mapping's names
			case math.IsInf(f, 1):
				b = append(b, `"Infinity"`...)
			case math.IsInf(f, -1):
				b = append(b, `"-Infinity"`...)
			default:
				j, _ := json.Marshal(f)
				b = append(b, j...)
			}
		case attrBool:
			b = append(b, `"boolValue":`...)
			b = strconv.AppendBool(b, a.n != 0)
		}
		b = append(b, "}}"...)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string: plain ASCII as is, anything
// else through encoding/json (escapes, invalid UTF-8).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
