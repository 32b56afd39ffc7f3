package telemetry

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nimbusfn/nimbus/internal/metering"
)

// scrape fetches /metrics over HTTP and parses it with the Prometheus text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, body)
	}
	return fams
}

func labelsOf(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// values maps "label=value,…" to the sample value (histograms: count).
func values(t *testing.T, fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			out[labelsOf(m)] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[labelsOf(m)] = m.GetGauge().GetValue()
		case m.Histogram != nil:
			out[labelsOf(m)] = float64(m.GetHistogram().GetSampleCount())
		}
	}
	return out
}

func TestMetricsObserveExposition(t *testing.T) {
	m := NewMetrics()
	recs := []metering.Record{
		{Tenant: "acme", Function: "hello", Trigger: "http", Outcome: "ok", DurationNS: 1_500_000, MemoryMB: 128, Cold: true},
		{Tenant: "acme", Function: "hello", Trigger: "http", Outcome: "ok", DurationNS: 200_000, MemoryMB: 128},
		{Tenant: "acme", Function: "hello", Trigger: "async", Outcome: "timeout", DurationNS: 3_000_000_000, MemoryMB: 128},
		{Tenant: "acme", Function: "hello", Trigger: "http", Outcome: "throttled"},
		{Tenant: "acme", Function: "hello", Trigger: "weird", Outcome: "strange", DurationNS: 1, MemoryMB: 128},
		{Tenant: "beta", Function: "hello", Trigger: "schedule", Outcome: "ok", DurationNS: 10_000_000, MemoryMB: 1024},
	}
	for i := range recs {
		m.Observe(&recs[i])
	}
	m.AsyncRetry("acme", "hello")
	m.AsyncRetry("acme", "hello")
	m.DeadLetter("acme", "hello")
	m.RegisterPools(func() []PoolStat {
		return []PoolStat{
			{Tenant: "acme", Function: "hello", Version: 1, Idle: 2, Busy: 1, Desired: 3, InFlight: 1},
			{Tenant: "acme", Function: "hello", Version: 2, Starting: 1, Busy: 2, Desired: 2, InFlight: 2, Queued: 4},
		}
	})
	fams := scrape(t, m)

	checks := []struct {
		metric string
		want   map[string]float64
	}{
		{"nimbus_invocations_total", map[string]float64{
			"function=hello,outcome=ok,tenant=acme,trigger=http":        2,
			"function=hello,outcome=timeout,tenant=acme,trigger=async":  1,
			"function=hello,outcome=throttled,tenant=acme,trigger=http": 1,
			"function=hello,outcome=other,tenant=acme,trigger=other":    1,
			"function=hello,outcome=ok,tenant=beta,trigger=schedule":    1,
		}},
		{"nimbus_invocation_duration_seconds", map[string]float64{"function=hello,tenant=acme": 4, "function=hello,tenant=beta": 1}},
		{"nimbus_cold_starts_total", map[string]float64{"function=hello,tenant=acme": 1, "function=hello,tenant=beta": 0}},
		{"nimbus_throttles_total", map[string]float64{"function=hello,tenant=acme": 1, "function=hello,tenant=beta": 0}},
		// 2 + 1 + 3000 + 1 ms; 10 ms.
		{"nimbus_billed_ms_total", map[string]float64{"function=hello,tenant=acme": 3004, "function=hello,tenant=beta": 10}},
		{"nimbus_async_retries_total", map[string]float64{"function=hello,tenant=acme": 2, "function=hello,tenant=beta": 0}},
		{"nimbus_dead_letters_total", map[string]float64{"function=hello,tenant=acme": 1, "function=hello,tenant=beta": 0}},
		{"nimbus_instances", map[string]float64{
			"function=hello,state=starting,tenant=acme": 1, "function=hello,state=idle,tenant=acme": 2, "function=hello,state=busy,tenant=acme": 3,
		}},
		{"nimbus_in_flight", map[string]float64{"function=hello,tenant=acme": 3}},
		{"nimbus_queue_depth", map[string]float64{"function=hello,tenant=acme": 4}},
		{"nimbus_desired_instances", map[string]float64{"function=hello,tenant=acme": 5}},
	}
	for _, c := range checks {
		got := values(t, fams, c.metric)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s:\n got %v\nwant %v", c.metric, got, c.want)
		}
	}
	gbs := values(t, fams, "nimbus_gb_seconds_total")
	if want := 3004.0 / 1000 * 128 / 1024; math.Abs(gbs["function=hello,tenant=acme"]-want) > 1e-12 {
		t.Errorf("acme GB-s = %v, want %v", gbs["function=hello,tenant=acme"], want)
	}
	if want := 10.0 / 1000; math.Abs(gbs["function=hello,tenant=beta"]-want) > 1e-12 {
		t.Errorf("beta GB-s = %v, want %v", gbs["function=hello,tenant=beta"], want)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("missing runtime/process metric %s", name)
		}
	}
	// The histogram's buckets: the 1.5 ms call falls in le=0.0025.
	for _, mt := range fams["nimbus_invocation_duration_seconds"].GetMetric() {
		if labelsOf(mt) != "function=hello,tenant=beta" {
			continue
		}
		for _, b := range mt.GetHistogram().GetBucket() {
			if b.GetUpperBound() == 0.01 && b.GetCumulativeCount() != 1 {
				t.Errorf("beta le=0.01 bucket = %d, want 1", b.GetCumulativeCount())
			}
		}
	}
}

func TestMetricsCardinalityCapAndForget(t *testing.T) {
	m := NewMetricsWith(MetricsConfig{MaxSeries: 3})
	for i := range 6 {
		m.Observe(&metering.Record{Tenant: "acme", Function: fmt.Sprintf("f%d", i), Trigger: "http", Outcome: "ok", DurationNS: 1e6, MemoryMB: 128})
	}
	got := values(t, scrape(t, m), "nimbus_cold_starts_total")
	want := map[string]float64{"function=f0,tenant=acme": 0, "function=f1,tenant=acme": 0, "function=f2,tenant=acme": 0, "function=_other,tenant=acme": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("capped series: got %v, want %v", got, want)
	}
	inv := values(t, scrape(t, m), "nimbus_invocations_total")
	if inv["function=_other,outcome=ok,tenant=acme,trigger=http"] != 3 {
		t.Fatalf("_other invocations: %v", inv)
	}
	m.Forget("acme", "f1")
	m.Forget("acme", "nope") // unknown: no effect
	m.Observe(&metering.Record{Tenant: "acme", Function: "f9", Trigger: "http", Outcome: "ok", DurationNS: 1e6, MemoryMB: 128})
	inv = values(t, scrape(t, m), "nimbus_invocations_total")
	if _, ok := inv["function=f1,outcome=ok,tenant=acme,trigger=http"]; ok {
		t.Fatalf("forgotten function still exported: %v", inv)
	}
	if inv["function=f9,outcome=ok,tenant=acme,trigger=http"] != 1 {
		t.Fatalf("a forgotten series did not free room under the cap: %v", inv)
	}
}

func TestMetricsConcurrentObserveAndScrape(t *testing.T) {
	m := NewMetrics()
	var wg sync.WaitGroup
	const workers, each = 8, 2000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := metering.Record{Tenant: "acme", Function: fmt.Sprintf("f%d", w%3), Trigger: "http", Outcome: "ok", DurationNS: 1e6, MemoryMB: 128}
			for range each {
				m.Observe(&rec)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			scrape(t, m)
		}
	}()
	wg.Wait()
	var total float64
	for _, v := range values(t, scrape(t, m), "nimbus_invocations_total") {
		total += v
	}
	if total != workers*each {
		t.Fatalf("invocations total = %v, want %d", total, workers*each)
	}
}

func TestMetricsStats(t *testing.T) {
	m := NewMetrics()
	for i := range 100 {
		m.Observe(&metering.Record{Tenant: "acme", Function: "hello", Trigger: "http", Outcome: "ok", DurationNS: int64(i+1) * 100_000, MemoryMB: 128, Cold: i == 0})
	}
	m.Observe(&metering.Record{Tenant: "acme", Function: "hello", Outcome: "throttled"})
	m.Observe(&metering.Record{Tenant: "beta", Function: "x", Outcome: "error", DurationNS: 1e6})
	m.RegisterPools(func() []PoolStat {
		return []PoolStat{{Tenant: "acme", Function: "hello", Idle: 1, Busy: 2, InFlight: 2}, {Tenant: "acme", Function: "warm", Idle: 1}}
	})
	got := m.Stats("acme")
	if len(got) != 2 || got[0].Function != "hello" || got[1].Function != "warm" {
		t.Fatalf("stats %+v", got)
	}
	h := got[0]
	if h.Invocations != 101 || h.Throttled != 1 || h.ColdStarts != 1 || h.Errors != 0 || h.Instances != 3 || h.Busy != 2 || h.InFlight != 2 {
		t.Fatalf("hello stats %+v", h)
	}
	// Durations 0.1..10 ms: p50 ≈ 5 ms, p99 ≈ 10 ms (bucket interpolation).
	if h.P50 < 0.0025 || h.P50 > 0.01 || h.P99 < 0.005 || h.P99 > 0.01 {
		t.Fatalf("quantiles p50 %v p99 %v", h.P50, h.P99)
	}
	if all := m.Stats(""); len(all) != 3 {
		t.Fatalf("all tenants: %+v", all)
	}
	srv := httptest.NewServer(m.StatsHandler(func(*http.Request) string { return "beta" }))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `"function":"x"`) || strings.Contains(string(body), "acme") {
		t.Fatalf("stats for beta: %s", body)
	}
}
