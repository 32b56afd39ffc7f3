package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/telemetry/otlptest"
)

func TestParseTraceparent(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cases := []struct {
		in      string
		ok      bool
		sampled bool
	}{
		{"00-" + tid + "-" + sid + "-01", true, true},
		{"00-" + tid + "-" + sid + "-00", true, false},
		{" 00-" + tid + "-" + sid + "-01 ", true, true},
		{"01-" + tid + "-" + sid + "-01-future-stuff", true, true}, // a future version may add fields
		{"00-" + tid + "-" + sid + "-01-extra", false, false},      // version 00 may not
		{"ff-" + tid + "-" + sid + "-01", false, false},
		{"00-" + strings.ToUpper(tid) + "-" + sid + "-01", false, false},
		{"00-00000000000000000000000000000000-" + sid + "-01", false, false},
		{"00-" + tid + "-0000000000000000-01", false, false},
		{"00-" + tid + "-" + sid + "-0g", false, false},
		{"00-" + tid + "-" + sid, false, false},
		{"", false, false},
		{"garbage", false, false},
	}
	for _, c := range cases {
		sc, ok := ParseTraceparent(c.in)
		if ok != c.ok || (ok && sc.Sampled() != c.sampled) {
			t.Errorf("ParseTraceparent(%q) = %v, ok %v; want ok %v sampled %v", c.in, sc, ok, c.ok, c.sampled)
		}
		if ok && (sc.TraceID.String() != tid || sc.SpanID.String() != sid) {
			t.Errorf("ParseTraceparent(%q) ids = %s %s", c.in, sc.TraceID, sc.SpanID)
		}
	}
	sc, _ := ParseTraceparent("00-" + tid + "-" + sid + "-01")
	if got := sc.Traceparent(); got != "00-"+tid+"-"+sid+"-01" {
		t.Errorf("round trip = %q", got)
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		sc, ok := ParseTraceparent(s)
		if !ok {
			return
		}
		again, ok2 := ParseTraceparent(sc.Traceparent())
		if !ok2 || again.TraceID != sc.TraceID || again.SpanID != sc.SpanID || again.Flags != sc.Flags {
			t.Fatalf("%q parsed, but its re-encoding %q does not round-trip", s, sc.Traceparent())
		}
	})
}

func TestValidTracestate(t *testing.T) {
	for s, want := range map[string]bool{
		"":                  true,
		"congo=t61rcWkgMzE": true,
		"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE": true,
		"novalue=":                 false,
		"=v":                       false,
		strings.Repeat("a=b,", 33): false,
		strings.Repeat("x", 600):   false,
	} {
		if got := ValidTracestate(s); got != want {
			t.Errorf("ValidTracestate(%.30q) = %v, want %v", s, got, want)
		}
	}
}

// byName indexes the spans r received by name.
func byName(r *otlptest.Receiver) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, s := range r.Spans() {
		out[s["name"].(string)] = s
	}
	return out
}

// TestTracingExportsOTLPFollowingTraceparent exports in both OTLP/HTTP
// encodings; the receiver decodes protobuf with the OpenTelemetry project's
// generated types.
func TestTracingExportsOTLPFollowingTraceparent(t *testing.T) {
	for _, c := range []struct{ protocol, contentType string }{
		{"", "application/x-protobuf"}, // the default
		{ProtocolProtobuf, "application/x-protobuf"},
		{ProtocolJSON, "application/json"},
	} {
		t.Run(c.contentType+"/"+c.protocol, func(t *testing.T) { testTracingExport(t, c.protocol, c.contentType) })
	}
}

func testTracingExport(t *testing.T, protocol, contentType string) {
	rcv := otlptest.New(t)
	tr := NewTracer(TracingConfig{Endpoint: rcv.URL, ServiceName: "nimbus-test", FlushInterval: 50 * time.Millisecond,
		Protocol: protocol, Headers: map[string]string{"Authorization": "Bearer collector-token"}})
	ctx := context.Background()
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tr.Stop(ctx) }()

	const tid, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	gctx, gw := tr.StartSpan(ctx, "gateway /fn/hello", "00-"+tid+"-"+caller+"-01", String("tenant", "acme"), Int("status", 200))
	gw.SetTracestate("congo=t61rcWkgMzE")
	gw.SetKind(KindServer)
	if got := gw.Context().TraceID.String(); got != tid {
		t.Fatalf("gateway span trace id %s, want the caller's %s", got, tid)
	}
	// The traceparent passed into the function names the gateway span.
	tp := gw.Traceparent()
	if !strings.HasPrefix(tp, "00-"+tid+"-"+gw.Context().SpanID.String()+"-01") {
		t.Fatalf("traceparent into the function = %q", tp)
	}
	if TraceparentFrom(gctx) != tp {
		t.Fatalf("TraceparentFrom(ctx) = %q, want %q", TraceparentFrom(gctx), tp)
	}
	// A child started from ctx alone; a host-API span started from the
	// traceparent the function sent back out.
	_, inv := tr.StartSpan(gctx, "invoke hello", "", Bool("cold", true), Float("memory_gb", 0.125))
	_, host := tr.StartSpan(context.Background(), "hostapi kv_get", inv.Traceparent())
	host.SetKind(KindClient)
	host.Fail("key not found")
	host.End(StatusOK)
	inv.End(StatusOK)
	gw.End(StatusOK)
	gw.End(StatusError) // second End: no effect

	// A caller that did not sample: nothing exported, flag passed on.
	_, unsampled := tr.StartSpan(ctx, "unsampled", "00-"+tid+"-"+caller+"-00")
	if unsampled.IsRecording() || !strings.HasSuffix(unsampled.Traceparent(), "-00") {
		t.Fatalf("unsampled caller: recording=%v traceparent %s", unsampled.IsRecording(), unsampled.Traceparent())
	}
	unsampled.End(StatusOK)
	// No traceparent: a new root.
	_, root := tr.StartSpan(ctx, "root", "not-a-traceparent")
	root.End(StatusOK)

	eventually(t, 10*time.Second, func() error {
		if n := len(byName(rcv)); n < 4 {
			return fmt.Errorf("%d spans received", n)
		}
		return nil
	})
	spans := byName(rcv)
	if _, ok := spans["unsampled"]; ok {
		t.Error("an unsampled span was exported")
	}
	g, i, h, r := spans["gateway /fn/hello"], spans["invoke hello"], spans["hostapi kv_get"], spans["root"]
	for name, s := range map[string]map[string]any{"gateway": g, "invoke": i, "host": h} {
		if s["traceId"] != tid {
			t.Errorf("%s span traceId %v, want %s", name, s["traceId"], tid)
		}
	}
	if g["parentSpanId"] != caller || i["parentSpanId"] != g["spanId"] || h["parentSpanId"] != i["spanId"] {
		t.Errorf("parent chain broken: gateway %v←%v, invoke %v←%v, host %v←%v",
			g["spanId"], g["parentSpanId"], i["spanId"], i["parentSpanId"], h["spanId"], h["parentSpanId"])
	}
	if r["traceId"] == tid || r["parentSpanId"] != nil || len(r["traceId"].(string)) != 32 {
		t.Errorf("root span: %v", r)
	}
	if g["kind"] != float64(KindServer) || h["kind"] != float64(KindClient) || i["kind"] != float64(KindInternal) {
		t.Errorf("kinds: %v %v %v", g["kind"], h["kind"], i["kind"])
	}
	if g["traceState"] != "congo=t61rcWkgMzE" {
		t.Errorf("traceState %v", g["traceState"])
	}
	st := h["status"].(map[string]any)
	if st["code"] != float64(StatusError) || st["message"] != "key not found" {
		t.Errorf("failed span status %v", st)
	}
	if gs := g["status"].(map[string]any); gs["code"] != float64(StatusOK) {
		t.Errorf("gateway status %v", gs)
	}
	start, end := g["startTimeUnixNano"].(string), g["endTimeUnixNano"].(string)
	if len(start) < 18 || end < start {
		t.Errorf("times %s..%s", start, end)
	}
	attrs := fmt.Sprint(g["attributes"]) + fmt.Sprint(i["attributes"])
	for _, want := range []string{"key:tenant value:map[stringValue:acme]", "key:status value:map[intValue:200]", "boolValue:true", "doubleValue:0.125"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("attributes %s lack %s", attrs, want)
		}
	}
	if bad, svc := rcv.Bad(), rcv.Services(); len(bad) > 0 || len(svc) == 0 || svc[0] != "nimbus-test" {
		t.Errorf("receiver: bad %v, service names %v", bad, svc)
	}
	for i, ct := range rcv.ContentTypes() {
		if ct != contentType {
			t.Errorf("export %d sent as %s, want %s", i, ct, contentType)
		}
		if h := rcv.Headers()[i].Get("Authorization"); h != "Bearer collector-token" {
			t.Errorf("export %d: Authorization %q, want the configured header", i, h)
		}
	}
}

func TestTracingStopFlushesAndCountsFailures(t *testing.T) {
	rcv := otlptest.New(t)
	tr := NewTracer(TracingConfig{Endpoint: rcv.URL, FlushInterval: time.Hour, BatchSize: 7})
	ctx := context.Background()
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		_, s := tr.StartSpan(ctx, fmt.Sprintf("s%d", i), "")
		s.End(StatusOK)
	}
	if err := tr.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := tr.Stats(); st.Exported != 20 || st.Failed != 0 {
		t.Fatalf("stats after stop: %+v", st)
	}
	if n := len(byName(rcv)); n != 20 {
		t.Fatalf("receiver got %d spans, want 20", n)
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", 503) }))
	defer down.Close()
	tr2 := NewTracer(TracingConfig{Endpoint: down.URL, FlushInterval: time.Hour})
	_ = tr2.Start(ctx)
	_, s := tr2.StartSpan(ctx, "x", "")
	s.End(StatusOK)
	_ = tr2.Stop(ctx)
	if st := tr2.Stats(); st.Failed != 1 || st.Exported != 0 {
		t.Fatalf("collector down: %+v", st)
	}
}

func TestTracingWithoutEndpointRecordsNothing(t *testing.T) {
	for _, tr := range []*Tracer{nil, NewTracer(TracingConfig{})} {
		ctx := context.Background()
		if err := tr.Start(ctx); err != nil {
			t.Fatal(err)
		}
		const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		c, s := tr.StartSpan(ctx, "x", in, String("a", "b"))
		if s.IsRecording() || FromContext(c) != s || s.Context().TraceID.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !s.Context().Sampled() {
			t.Fatalf("span without endpoint: %+v", s.Context())
		}
		s.End(StatusOK)
		allocs := testing.AllocsPerRun(200, func() {
			_, s := tr.StartSpan(ctx, "invoke", in, String("tenant", "acme"))
			s.End(StatusOK)
		})
		if allocs > 1 {
			t.Errorf("a span without an exporter costs %.0f allocations, want at most 1", allocs)
		}
		if err := tr.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerSpanAndInject(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	in := http.Header{}
	in.Set("traceparent", tp)
	in.Set("tracestate", "congo=t61rcWkgMzE")
	var tr *Tracer // no exporter: ids still flow
	ctx, s := tr.StartServerSpan(context.Background(), "GET /fn/hello", in)
	out := http.Header{}
	Inject(ctx, out)
	got, ok := ParseTraceparent(out.Get("traceparent"))
	if !ok || got.TraceID != s.Context().TraceID || got.SpanID != s.Context().SpanID || got.TraceID.String() != tp[3:35] {
		t.Fatalf("injected %q from span %+v", out.Get("traceparent"), s.Context())
	}
	if out.Get("tracestate") != "congo=t61rcWkgMzE" {
		t.Fatalf("tracestate %q", out.Get("tracestate"))
	}
	empty := http.Header{}
	Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("inject without a span set %v", empty)
	}
}
