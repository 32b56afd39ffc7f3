package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The reference encoding: the OTLP/HTTP JSON document built as structs and
// marshalled by encoding/json, against which appendExport is checked.
type (
	otlpExport struct {
		ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
	}
	otlpResourceSpans struct {
		Resource   otlpResource     `json:"resource"`
		ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
	}
	otlpResource struct {
		Attributes []otlpKeyValue `json:"attributes"`
	}
	otlpScopeSpans struct {
		Scope otlpScope  `json:"scope"`
		Spans []otlpSpan `json:"spans"`
	}
	otlpScope struct {
		Name string `json:"name"`
	}
	otlpSpan struct {
		TraceID           string         `json:"traceId"`
		SpanID            string         `json:"spanId"`
		ParentSpanID      string         `json:"parentSpanId,omitempty"`
		TraceState        string         `json:"traceState,omitempty"`
		Flags             uint32         `json:"flags,omitempty"`
		Name              string         `json:"name"`
		Kind              SpanKind       `json:"kind"`
		StartTimeUnixNano uint64         `json:"startTimeUnixNano,string"`
		EndTimeUnixNano   uint64         `json:"endTimeUnixNano,string"`
		Attributes        []otlpKeyValue `json:"attributes,omitempty"`
		Status            otlpStatus     `json:"status"`
	}
	otlpStatus struct {
		Code    StatusCode `json:"code,omitempty"`
		Message string     `json:"message,omitempty"`
	}
	otlpKeyValue struct {
		Key   string    `json:"key"`
		Value otlpValue `json:"value"`
	}
	otlpValue struct {
		StringValue *string  `json:"stringValue,omitempty"`
		IntValue    *string  `json:"intValue,omitempty"`
		DoubleValue *float64 `json:"doubleValue,omitempty"`
		BoolValue   *bool    `json:"boolValue,omitempty"`
	}
)

func otlpAttrs(attrs []Attr) []otlpKeyValue {
	out := make([]otlpKeyValue, 0, len(attrs))
	for _, a := range attrs {
		kv := otlpKeyValue{Key: a.Key}
		switch a.kind {
		case attrString:
			s := a.s
			kv.Value.StringValue = &s
		case attrInt:
			s := fmt.Sprint(a.n)
			kv.Value.IntValue = &s
		case attrFloat:
			f := a.float()
			kv.Value.DoubleValue = &f
		case attrBool:
			b := a.n != 0
			kv.Value.BoolValue = &b
		}
		out = append(out, kv)
	}
	return out
}

func (t *Tracer) encode(spans []*Span) otlpExport {
	out := make([]otlpSpan, 0, len(spans))
	for _, s := range spans {
		os := otlpSpan{
			TraceID: s.sc.TraceID.String(), SpanID: s.sc.SpanID.String(), TraceState: s.sc.State,
			Flags: uint32(s.sc.Flags), Name: s.name, Kind: s.kind,
			StartTimeUnixNano: uint64(s.start), EndTimeUnixNano: uint64(s.end),
			Attributes: otlpAttrs(s.attrs), Status: otlpStatus{Code: s.status, Message: s.message},
		}
		if s.parent.IsValid() {
			os.ParentSpanID = s.parent.String()
		}
		out = append(out, os)
	}
	return otlpExport{ResourceSpans: []otlpResourceSpans{{
		Resource:   otlpResource{Attributes: otlpAttrs([]Attr{String("service.name", t.cfg.ServiceName)})},
		ScopeSpans: []otlpScopeSpans{{Scope: otlpScope{Name: "github.com/nimbusfn/nimbus"}, Spans: out}},
	}}}
}

// testSpan is a finished server span of 1.5 ms with fresh ids, a parent if
// parent is set, and attrs.
func testSpan(name string, parent bool, attrs ...Attr) *Span {
	now := time.Unix(1700000000, 123456789)
	s := &Span{name: name, kind: KindServer, start: now.UnixNano(), end: now.Add(1500 * time.Microsecond).UnixNano(), attrs: attrs}
	s.sc.TraceID, s.sc.SpanID = newTraceID(), newSpanID()
	if parent {
		s.parent = newSpanID()
	}
	return s
}

// TestAppendExportMatchesReference: the hand-written encoder gives the same
// document as encoding/json for spans with and without parents, tracestate,
// flags, every attribute kind, errors and strings that need escaping.
func TestAppendExportMatchesReference(t *testing.T) {
	tr := NewTracer(TracingConfig{ServiceName: "svc \"quoted\" <x>"})
	mk := testSpan
	a := mk("invoke hello", false, String("faas.name", "hello"), Int("n", -42), Bool("ok", true), Bool("no", false), Float("f", 0.25))
	b := mk("kv.get \u00e9t\u00e9\n\"q\"\\", true, String("k", "caf\u00e9 & <b>\x01"), Float("big", 1e21))
	b.sc.State, b.sc.Flags = "a=1,b=2", FlagSampled
	b.status, b.message = StatusError, "kaboom: \"bad\"\n"
	c := mk("bare", true)
	c.status = StatusOK
	for _, spans := range [][]*Span{{a}, {a, b, c}, {}} {
		want, err := json.Marshal(tr.encode(spans))
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.appendExport(nil, spans); string(got) != string(want) {
			t.Fatalf("appendExport:\n%s\nencoding/json:\n%s", got, want)
		}
	}
	// NaN and infinities, which encoding/json refuses, come out as the
	// protobuf JSON mapping's names and leave valid JSON.
	d := mk("nan", false, Float("x", math.NaN()), Float("y", math.Inf(1)), Float("z", math.Inf(-1)))
	var doc any
	if err := json.Unmarshal(tr.appendExport(nil, []*Span{d}), &doc); err != nil {
		t.Fatalf("NaN export is not JSON: %v", err)
	}
}

func BenchmarkAppendExport(b *testing.B) {
	tr := NewTracer(TracingConfig{ServiceName: "nimbus"})
	spans := make([]*Span, 512)
	for i := range spans {
		s := &Span{name: "invoke hello", kind: KindServer, start: time.Now().UnixNano(), end: time.Now().UnixNano(),
			attrs: []Attr{String("faas.name", "hello"), String("faas.invocation_id", "abcdefghijklmnop"), Int("http.status_code", 200)}}
		s.sc.TraceID, s.sc.SpanID = newTraceID(), newSpanID()
		spans[i] = s
	}
	b.Run("json", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = tr.appendExport(buf[:0], spans)
		}
		b.ReportMetric(float64(len(buf))/float64(len(spans)), "bytes/span")
	})
	b.Run("protobuf", func(b *testing.B) {
		var buf, scratch []byte
		for b.Loop() {
			buf, scratch = tr.appendExportProto(buf[:0], scratch, spans)
		}
		b.ReportMetric(float64(len(buf))/float64(len(spans)), "bytes/span")
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(tr.encode(spans))
		}
	})
}

// TestAppendExportProtoDecodes: the protobuf export, decoded with the
// OpenTelemetry project's generated types, carries every field of every
// span: ids, parent, tracestate, flags, name, kind, times, each attribute
// kind (negative ints, NaN, non-ASCII strings), status code and message.
func TestAppendExportProtoDecodes(t *testing.T) {
	tr := NewTracer(TracingConfig{ServiceName: "svc é"})
	mk := testSpan
	a := mk("invoke hello", false, String("faas.name", "hello"), Int("n", -42), Int("big", 1<<40), Bool("ok", true), Bool("no", false), Float("f", 0.25), Float("nan", math.NaN()))
	b := mk("kv.get été\n\"q\"", true, String("k", strings.Repeat("x", 300)))
	b.sc.State, b.sc.Flags = "a=1,b=2", FlagSampled
	b.status, b.message = StatusError, "kaboom"
	c := mk("", true)
	c.kind, c.status = 0, StatusOK
	var buf, scratch []byte
	for _, spans := range [][]*Span{{a}, {a, b, c}, {}} {
		buf, scratch = tr.appendExportProto(buf[:0], scratch, spans)
		var td tracepb.TracesData
		if err := proto.Unmarshal(buf, &td); err != nil {
			t.Fatalf("%d spans: %v", len(spans), err)
		}
		if len(td.ResourceSpans) != 1 || len(td.ResourceSpans[0].ScopeSpans) != 1 {
			t.Fatalf("shape: %v", &td)
		}
		rs := td.ResourceSpans[0]
		if kv := rs.Resource.GetAttributes(); len(kv) != 1 || kv[0].Key != "service.name" || kv[0].Value.GetStringValue() != "svc é" {
			t.Errorf("resource attributes %v", kv)
		}
		ss := rs.ScopeSpans[0]
		if ss.Scope.GetName() != scopeName || len(ss.Spans) != len(spans) {
			t.Fatalf("scope %q with %d spans, want %q with %d", ss.Scope.GetName(), len(ss.Spans), scopeName, len(spans))
		}
		for i, want := range spans {
			got := ss.Spans[i]
			var parent []byte
			if want.parent.IsValid() {
				parent = want.parent[:]
			}
			if string(got.TraceId) != string(want.sc.TraceID[:]) || string(got.SpanId) != string(want.sc.SpanID[:]) ||
				string(got.ParentSpanId) != string(parent) || got.TraceState != want.sc.State || got.Flags != uint32(want.sc.Flags) ||
				got.Name != want.name || int(got.Kind) != int(want.kind) ||
				got.StartTimeUnixNano != uint64(want.start) || got.EndTimeUnixNano != uint64(want.end) ||
				int(got.Status.GetCode()) != int(want.status) || got.Status.GetMessage() != want.message {
				t.Errorf("span %d decoded as %v", i, got)
			}
			if len(got.Attributes) != len(want.attrs) {
				t.Fatalf("span %d: %d attributes, want %d", i, len(got.Attributes), len(want.attrs))
			}
			for j, wa := range want.attrs {
				ga := got.Attributes[j]
				ok := ga.Key == wa.Key
				switch wa.kind {
				case attrString:
					ok = ok && ga.Value.GetStringValue() == wa.s
				case attrInt:
					ok = ok && ga.Value.GetIntValue() == wa.n
				case attrBool:
					ok = ok && ga.Value.GetBoolValue() == (wa.n != 0) && ga.Value.GetValue() != nil
				case attrFloat:
					f := ga.Value.GetDoubleValue()
					ok = ok && (f == wa.float() || math.IsNaN(f) && math.IsNaN(wa.float()))
				}
				if !ok {
					t.Errorf("span %d attribute %d: %v, want %+v", i, j, ga, wa)
				}
			}
		}
	}
}
