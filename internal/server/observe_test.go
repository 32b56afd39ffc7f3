package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/telemetry/otlptest"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// usageRow is one row of GET /api/v1/usage.
type usageRow struct {
	Key         string  `json:"key"`
	Invocations int64   `json:"invocations"`
	ColdStarts  int64   `json:"cold_starts"`
	BilledMS    int64   `json:"billed_ms"`
	GBSeconds   float64 `json:"gb_seconds"`
	Cost        float64 `json:"cost"`
}

func usageBy(t *testing.T, e *testenv.Env, key, query string) (rows map[string]usageRow, total usageRow) {
	t.Helper()
	var rep struct {
		Rows  []usageRow `json:"rows"`
		Total usageRow   `json:"total"`
	}
	if err := json.Unmarshal(mustCall(t, e, key, "GET", "/api/v1/usage?"+query, nil), &rep); err != nil {
		t.Fatalf("usage: %v", err)
	}
	rows = map[string]usageRow{}
	for _, r := range rep.Rows {
		rows[r.Key] = r
	}
	return rows, rep.Total
}

// invocationRecords reads every record of tenant's fn from the invocations stream.
func invocationRecords(t *testing.T, e *testenv.Env, tenantName, fn string) []metering.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subj := bus.Subject(bus.SubjectInvocations, tenantName, fn)
	cons, err := e.Bus.JS.OrderedConsumer(ctx, bus.StreamInvocations, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		t.Fatalf("records of %s: %v", fn, err)
	}
	var out []metering.Record
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			t.Fatalf("records of %s: %v", fn, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			recs, bad := metering.DecodeRecords(m.Data())
			if bad != 0 {
				t.Fatalf("%d unreadable records of %s in %q", bad, fn, m.Data())
			}
			out = append(out, recs...)
		}
		if batch.Error() != nil {
			t.Fatalf("records of %s: %v", fn, batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// scrape parses /metrics with the Prometheus text parser.
func scrape(t testing.TB, e *testenv.Env) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(e.URL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("/metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// metricSum adds the values of family's series whose labels include want.
func metricSum(fams map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f, ok := fams[family]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// TestMeteringEndToEnd invokes two functions with a random mix of
// durations and failures and checks that the usage report equals the sum of
// the invocation records (1 ms rounding, GB-seconds = billed ms × memory),
// that an idle function accrues nothing, and that /metrics agrees.
func TestMeteringEndToEnd(t *testing.T) {
	e := testenv.Start(t)
	code := misbehave(t)
	createTenant(t, e, "meter", "")
	key, _ := createKey(t, e, "meter", "", "deploy", "invoke", "read")
	memory := map[string]int{"work": 256, "tiny": 128, "idle": 512}
	for fn, mb := range memory {
		if status, b := deployAs(t, e, key, fn, code, registry.Config{MemoryMB: mb}); status != 201 {
			t.Fatalf("deploy %s: %d %s", fn, status, b)
		}
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	calls := map[string]int64{}
	failures := map[string]int64{}
	lastWorkOK := false
	for i := 0; i < 16; i++ {
		fn := []string{"work", "tiny"}[rng.IntN(2)]
		path := fmt.Sprintf("/fn/%s/sleep?ms=%d", fn, rng.IntN(30))
		want := 200
		if rng.IntN(8) == 0 {
			path, want = "/fn/"+fn+"/panic", 502
		}
		if status, b := call(t, e, key, "GET", path, nil); status != want && !(want == 502 && status >= 500) {
			t.Fatalf("%s: %d %s", path, status, b)
		}
		calls[fn]++
		if want != 200 {
			failures[fn]++
		}
		if fn == "work" {
			lastWorkOK = want == 200 // a trap discards the instance it ran on
		}
	}

	want := map[string]usageRow{}
	for _, fn := range []string{"work", "tiny"} {
		var recs []metering.Record
		testenv.Eventually(t, 20*time.Second, func() error {
			recs = invocationRecords(t, e, "meter", fn)
			if int64(len(recs)) != calls[fn] {
				return fmt.Errorf("%d records of %s on %s, want %d", len(recs), fn, bus.StreamInvocations, calls[fn])
			}
			return nil
		})
		var w usageRow
		var mbms, errs int64
		for i, r := range recs {
			if r.MemoryMB != memory[fn] {
				t.Fatalf("record %d of %s: %+v", i, fn, r)
			}
			if r.Outcome != metering.OutcomeOK {
				errs++
			}
			billed := metering.BilledMS(&r)
			if metering.Ran(&r) && billed != (r.DurationNS+999_999)/1_000_000 {
				t.Fatalf("record %d: billed %d, want ceil(%d ns)", i, billed, r.DurationNS)
			}
			if r.Cold {
				w.ColdStarts++
			}
			w.BilledMS += billed
			mbms += billed * int64(r.MemoryMB)
		}
		if errs != failures[fn] {
			t.Fatalf("%s: %d failed records, %d failed calls", fn, errs, failures[fn])
		}
		w.Invocations = calls[fn]
		w.GBSeconds = float64(mbms) / 1024 / 1000
		want[fn] = w
	}

	var rows map[string]usageRow
	testenv.Eventually(t, 20*time.Second, func() error {
		rows, _ = usageBy(t, e, key, "by=function")
		for fn, w := range want {
			if rows[fn].Invocations != w.Invocations {
				return fmt.Errorf("usage reports %d invocations of %s, want %d", rows[fn].Invocations, fn, w.Invocations)
			}
		}
		return nil
	})
	for fn, w := range want {
		got := rows[fn]
		if got.BilledMS != w.BilledMS || got.ColdStarts != w.ColdStarts || math.Abs(got.GBSeconds-w.GBSeconds) > 1e-9 {
			t.Fatalf("usage of %s: %+v, the records give %+v", fn, got, w)
		}
		if got.Cost <= 0 {
			t.Fatalf("usage of %s costs nothing: %+v", fn, got)
		}
	}
	if idle, ok := rows["idle"]; ok && (idle.Invocations != 0 || idle.GBSeconds != 0) {
		t.Fatalf("the idle function accrued usage: %+v", idle)
	}
	if _, total := usageBy(t, e, key, "function=idle"); total.Invocations != 0 || total.GBSeconds != 0 || total.Cost != 0 {
		t.Fatalf("the idle function's total: %+v", total)
	}
	w, n, wantMS, wantGBs := want["work"], calls["work"], want["work"].BilledMS, want["work"].GBSeconds

	// /metrics agrees with the records.
	fams, err := scrape(t, e)
	if err != nil {
		t.Fatal(err)
	}
	lbl := map[string]string{"tenant": "meter", "function": "work"}
	checks := []struct {
		family string
		want   float64
	}{
		{"nimbus_invocations_total", float64(n)},
		{"nimbus_billed_ms_total", float64(wantMS)},
		{"nimbus_cold_starts_total", float64(w.ColdStarts)},
	}
	for _, c := range checks {
		if got, ok := metricSum(fams, c.family, lbl); !ok || got != c.want {
			t.Errorf("%s{tenant=meter,function=work} = %v (present %v), want %v", c.family, got, ok, c.want)
		}
	}
	if got, _ := metricSum(fams, "nimbus_invocations_total", map[string]string{"tenant": "meter", "function": "work", "outcome": "ok", "trigger": "http"}); got != float64(n-failures["work"]) {
		t.Errorf("nimbus_invocations_total{outcome=ok,trigger=http} = %v, want %d", got, n-failures["work"])
	}
	if got, _ := metricSum(fams, "nimbus_gb_seconds_total", lbl); math.Abs(got-wantGBs) > 1e-9 {
		t.Errorf("nimbus_gb_seconds_total = %v, want %v", got, wantGBs)
	}
	// The gauge is always present; an instance is left only if work's last
	// call did not trap (a trap discards its instance).
	if got, ok := metricSum(fams, "nimbus_instances", lbl); !ok || (lastWorkOK && got < 1) {
		t.Errorf("nimbus_instances{function=work} = %v (present %v, last call ok %v), want ≥ 1", got, ok, lastWorkOK)
	}
	if got, _ := metricSum(fams, "nimbus_invocations_total", map[string]string{"tenant": "meter", "function": "idle"}); got != 0 {
		t.Errorf("the idle function has %v invocations in /metrics", got)
	}
}

// TestQuotasAtTheMoment checks the function-count quota (403
// quota_functions) and the concurrency quota (429 quota_exceeded while the
// tenant's one allowed execution runs).
func TestQuotasAtTheMoment(t *testing.T) {
	e := testenv.Start(t)
	code := misbehave(t)
	createTenant(t, e, "small", `{"max_functions":1,"max_concurrency":1}`)
	key, _ := createKey(t, e, "small", "", "deploy", "invoke", "read")
	if status, b := deployAs(t, e, key, "one", code, registry.Config{}); status != 201 {
		t.Fatalf("first function: %d %s", status, b)
	}
	status, b := deployAs(t, e, key, "two", code, registry.Config{})
	if status != 403 || errCode(t, b) != "quota_functions" {
		t.Fatalf("second function: %d %s", status, b)
	}
	// A new version of the one function is not a new function.
	if status, b := deployAs(t, e, key, "one", code, registry.Config{MemoryMB: 64}); status != 201 {
		t.Fatalf("new version: %d %s", status, b)
	}
	if status, b := call(t, e, key, "GET", "/fn/one", nil); status != 200 {
		t.Fatalf("warm up: %d %s", status, b)
	}

	// Hold the one allowed execution with a long sleep.
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(mustReq(t, "GET", e.URL+"/fn/one/sleep?ms=4000", key))
		if err != nil {
			done <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := e.Quotas.InFlight("small"); n != 1 {
			return fmt.Errorf("%d executions in flight", n)
		}
		return nil
	})
	resp, body := e.Do("GET", "/fn/one", nil, "Authorization", "Bearer "+key)
	if resp.StatusCode != 429 || errCode(t, body) != "quota_exceeded" {
		t.Fatalf("second execution: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	if !strings.Contains(string(body), "concurrency") {
		t.Fatalf("the error does not name the quota: %s", body)
	}
	if got := <-done; got != 200 {
		t.Fatalf("the running execution: %d", got)
	}
	// The refusal is metered as throttled, and the slot is free again.
	if status, b := call(t, e, key, "GET", "/fn/one", nil); status != 200 {
		t.Fatalf("after the slot frees: %d %s", status, b)
	}
}

func mustReq(t *testing.T, method, url, key string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Error(err)
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return req
}

// spansOf returns the spans of trace traceID that r received.
func spansOf(r *otlptest.Receiver, traceID string) []map[string]any {
	var out []map[string]any
	for _, s := range r.Spans() {
		if s["traceId"] == traceID {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingThroughTheGateway checks that a caller's traceparent continues
// through the gateway into the function, and that the exported server span
// belongs to the caller's trace with the caller's span as parent.
func TestTracingThroughTheGateway(t *testing.T) {
	rcv := otlptest.New(t) // the default encoding, protobuf
	e := testenv.Start(t, func(c *server.Config) { c.Tracing.Endpoint = rcv.URL })
	e.Deploy("echo", echo(t), registry.Config{})
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	resp, body := e.Do("GET", "/fn/echo/traced", nil, "Traceparent", "00-"+traceID+"-"+parentID+"-01")
	if resp.StatusCode != 200 {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	var got struct{ Headers map[string][]string }
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	tp := strings.Join(got.Headers["Traceparent"], ",")
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == parentID {
		t.Fatalf("the function saw traceparent %q: want trace %s with the gateway's span as parent", tp, traceID)
	}
	var span map[string]any
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, s := range spansOf(rcv, traceID) {
			if s["parentSpanId"] == parentID {
				span = s
				return nil
			}
		}
		return fmt.Errorf("no exported span of trace %s with parent %s yet", traceID, parentID)
	})
	if span["spanId"] != parts[2] {
		t.Fatalf("the function's parent span %s is not the exported server span %v", parts[2], span["spanId"])
	}
	if !strings.Contains(fmt.Sprint(span["name"]), "echo") {
		t.Fatalf("span name %v does not name the function", span["name"])
	}
	// A call without a traceparent starts a new trace.
	resp, body = e.Do("GET", "/fn/echo/untraced", nil)
	if resp.StatusCode != 200 || strings.Contains(string(body), traceID) {
		t.Fatalf("untraced echo: %d %s", resp.StatusCode, body)
	}
}

// TestLogsFilterAndRedact checks the log query filters and that a secret's
// value printed by a function is redacted from its captured output.
func TestLogsFilterAndRedact(t *testing.T) {
	e := testenv.Start(t)
	const secret = "s3cr3t-hunter2-value"
	mustCall(t, e, "", "PUT", "/api/v1/secrets/api_token", []byte(`{"value":"`+secret+`"}`))
	e.Deploy("logger", misbehave(t), registry.Config{Secrets: []string{"api_token"}})

	// The secret arrives as an environment variable.
	if resp, b := e.Get("/fn/logger/env?k=api_token"); resp.StatusCode != 200 || string(b) != secret {
		t.Fatalf("env: %d %q", resp.StatusCode, b)
	}
	resp, _ := e.Get("/fn/logger/log?msg=first-line")
	firstID := resp.Header.Get("X-Nimbus-Invocation-Id")
	e.Get("/fn/logger/log?msg=second-line")
	e.Get("/fn/logger/log?msg=token%3D" + secret)
	if firstID == "" {
		t.Fatal("no invocation id")
	}

	logs := func(q string) []map[string]any {
		t.Helper()
		_, b := e.Get("/api/v1/functions/logger/logs?" + q)
		var out []map[string]any
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("log line %q: %v", sc.Text(), err)
			}
			out = append(out, l)
		}
		return out
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := len(logs("grep=token")); n < 2 { // stdout and stderr
			return fmt.Errorf("%d lines with the secret's line yet", n)
		}
		return nil
	})
	all := logs("")
	for _, l := range all {
		if strings.Contains(fmt.Sprint(l["line"]), secret) {
			t.Fatalf("a log line carries the secret: %v", l)
		}
	}
	red := logs("grep=token")
	for _, l := range red {
		if !strings.Contains(fmt.Sprint(l["line"]), "[REDACTED]") {
			t.Fatalf("the secret's line is not redacted: %v", l)
		}
	}
	if n := len(logs("grep=" + secret)); n != 0 {
		t.Fatalf("grep for the secret's value finds %d lines", n)
	}

	first := logs("grep=first-line")
	if len(first) != 2 {
		t.Fatalf("grep=first-line: %d lines, want 2 (stdout, stderr): %v", len(first), first)
	}
	for _, l := range first {
		if !strings.Contains(fmt.Sprint(l["line"]), "first-line") {
			t.Fatalf("grep returned %v", l)
		}
	}
	byID := logs("invocation=" + firstID)
	if len(byID) != 2 {
		t.Fatalf("invocation=%s: %d lines, want 2: %v", firstID, len(byID), byID)
	}
	for _, l := range byID {
		if l["invocation_id"] != firstID || !strings.Contains(fmt.Sprint(l["line"]), "first-line") {
			t.Fatalf("invocation filter returned %v", l)
		}
	}
	if n := len(logs("grep=second-line&invocation=" + firstID)); n != 0 {
		t.Fatalf("grep and invocation together: %d lines", n)
	}
	// Secrets are never returned by any API.
	if _, b := e.Get("/api/v1/secrets"); strings.Contains(string(b), secret) || !strings.Contains(string(b), "api_token") {
		t.Fatalf("secrets list: %s", b)
	}
	if _, b := e.Get("/api/v1/functions/logger"); strings.Contains(string(b), secret) {
		t.Fatalf("function answer carries the secret: %s", b)
	}
}

// TestMetricsScrapeUnderLoad scrapes /metrics while eight goroutines invoke
// a function: every scrape parses and every invocation succeeds.
func TestMetricsScrapeUnderLoad(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("hello", hello(t), registry.Config{})
	if resp, b := e.Get("/fn/hello"); resp.StatusCode != 200 {
		t.Fatalf("warm up: %d %s", resp.StatusCode, b)
	}
	var stop atomic.Bool
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	cl := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := cl.Get(e.URL + "/fn/hello?name=load")
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				calls.Add(1)
				if resp.StatusCode != 200 {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
				}
			}
		}()
	}
	scrapes := 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		fams, err := scrape(t, e)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("scrape %d: %v", scrapes, err)
		}
		if _, ok := fams["nimbus_invocations_total"]; !ok && scrapes > 0 {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("scrape %d lacks nimbus_invocations_total", scrapes)
		}
		scrapes++
	}
	stop.Store(true)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d invocations failed under scraping; first: %v", f, calls.Load(), firstErr.Load())
	}
	// The final scrape counts every invocation.
	want := float64(calls.Load() + 1)
	testenv.Eventually(t, 10*time.Second, func() error {
		fams, err := scrape(t, e)
		if err != nil {
			return err
		}
		got, _ := metricSum(fams, "nimbus_invocations_total", map[string]string{"function": "hello"})
		if got != want {
			return fmt.Errorf("nimbus_invocations_total{function=hello} = %v, want %v", got, want)
		}
		return nil
	})
	t.Logf("%d scrapes during %d invocations", scrapes, calls.Load())
}
