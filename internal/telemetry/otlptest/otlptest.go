// Package otlptest is an in-process OTLP/HTTP trace receiver for tests. It
// takes both encodings of an export: protobuf, decoded with the
// OpenTelemetry project's own generated types, and JSON, decoded with
// encoding/json. Either way each span is kept in the OTLP JSON shape
// (lowerCamelCase names, hex ids, 64-bit integers as decimal strings, enums
// as numbers), so tests read spans alike whatever the tracer sent.
package otlptest

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver records what tracers export to it.
type Receiver struct {
	URL string // the base URL; spans are accepted at URL + "/v1/traces"

	mu           sync.Mutex
	spans        []map[string]any
	services     []string
	contentTypes []string
	bad          []string
	headers      []http.Header
}

// New starts a receiver, stopped when t ends.
func New(t testing.TB) *Receiver {
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ct := req.Header.Get("Content-Type")
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.URL.Path != "/v1/traces" || req.Method != http.MethodPost {
		r.bad = append(r.bad, req.Method+" "+req.URL.Path)
		http.NotFound(w, req)
		return
	}
	var doc jsonExport
	switch ct {
	case "application/x-protobuf":
		// TracesData has ExportTraceServiceRequest's wire format (both are
		// field 1, repeated ResourceSpans) without the gRPC service code.
		var td tracepb.TracesData
		if err := proto.Unmarshal(body, &td); err != nil {
			r.bad = append(r.bad, "protobuf: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		doc = fromProto(&td)
	case "application/json":
		if err := json.Unmarshal(body, &doc); err != nil {
			r.bad = append(r.bad, "json: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	default:
		r.bad = append(r.bad, "content type "+ct)
		http.Error(w, "unsupported content type", http.StatusUnsupportedMediaType)
		return
	}
	r.contentTypes = append(r.contentTypes, ct)
	r.headers = append(r.headers, req.Header.Clone())
	for _, rs := range doc.ResourceSpans {
		for _, a := range rs.Resource.Attributes {
			if a.Key == "service.name" {
				if s, ok := a.Value["stringValue"].(string); ok {
					r.services = append(r.services, s)
				}
			}
		}
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	w.Header().Set("Content-Type", ct)
	if ct == "application/json" {
		_, _ = w.Write([]byte("{}"))
	}
}

// jsonExport is the part of an OTLP JSON export the receiver reads.
type jsonExport struct {
	ResourceSpans []resourceSpans `json:"resourceSpans"`
}

type resourceSpans struct {
	Resource struct {
		Attributes []keyValue `json:"attributes"`
	} `json:"resource"`
	ScopeSpans []scopeSpans `json:"scopeSpans"`
}

type scopeSpans struct {
	Spans []map[string]any `json:"spans"`
}

type keyValue struct {
	Key   string         `json:"key"`
	Value map[string]any `json:"value"`
}

// fromProto turns a decoded export into the OTLP JSON shape.
func fromProto(td *tracepb.TracesData) jsonExport {
	var doc jsonExport
	for _, rs := range td.ResourceSpans {
		var out resourceSpans
		for _, kv := range rs.GetResource().GetAttributes() {
			out.Resource.Attributes = append(out.Resource.Attributes, keyValue{kv.Key, anyValue(kv.Value)})
		}
		for _, ss := range rs.ScopeSpans {
			var spans scopeSpans
			for _, s := range ss.Spans {
				spans.Spans = append(spans.Spans, spanMap(s))
			}
			out.ScopeSpans = append(out.ScopeSpans, spans)
		}
		doc.ResourceSpans = append(doc.ResourceSpans, out)
	}
	return doc
}

func spanMap(s *tracepb.Span) map[string]any {
	m := map[string]any{
		"traceId":           hex.EncodeToString(s.TraceId),
		"spanId":            hex.EncodeToString(s.SpanId),
		"name":              s.Name,
		"kind":              float64(s.Kind),
		"startTimeUnixNano": strconv.FormatUint(s.StartTimeUnixNano, 10),
		"endTimeUnixNano":   strconv.FormatUint(s.EndTimeUnixNano, 10),
	}
	if len(s.ParentSpanId) > 0 {
		m["parentSpanId"] = hex.EncodeToString(s.ParentSpanId)
	}
	if s.TraceState != "" {
		m["traceState"] = s.TraceState
	}
	if s.Flags != 0 {
		m["flags"] = float64(s.Flags)
	}
	if len(s.Attributes) > 0 {
		var attrs []any
		for _, kv := range s.Attributes {
			attrs = append(attrs, map[string]any{"key": kv.Key, "value": anyValue(kv.Value)})
		}
		m["attributes"] = attrs
	}
	status := map[string]any{}
	if st := s.Status; st != nil {
		if st.Code != 0 {
			status["code"] = float64(st.Code)
		}
		if st.Message != "" {
			status["message"] = st.Message
		}
	}
	m["status"] = status
	return m
}

// anyValue is an AnyValue in the OTLP JSON shape, as encoding/json decodes it.
func anyValue(v *commonpb.AnyValue) map[string]any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return map[string]any{"stringValue": x.StringValue}
	case *commonpb.AnyValue_BoolValue:
		return map[string]any{"boolValue": x.BoolValue}
	case *commonpb.AnyValue_IntValue:
		return map[string]any{"intValue": strconv.FormatInt(x.IntValue, 10)}
	case *commonpb.AnyValue_DoubleValue:
		return map[string]any{"doubleValue": x.DoubleValue}
	}
	return map[string]any{}
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.spans...)
}

// Services returns the service.name of every export received.
func (r *Receiver) Services() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.services...)
}

// ContentTypes returns the content type of every export received.
func (r *Receiver) ContentTypes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.contentTypes...)
}

// Headers returns the request headers of every export received.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

// Bad returns what the receiver refused, one line per request.
func (r *Receiver) Bad() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}
