package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

// usageServer serves the real usage route (a real Meter on embedded
// JetStream), the real stats route of Metrics, and a fixed function list.
func usageServer(t *testing.T) (string, *metering.Publisher, *telemetry.Metrics, *metering.Meter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pub := metering.NewPublisher(metering.PublisherConfig{Bus: b})
	m := metering.NewMeter(metering.MeterConfig{Bus: b})
	for _, c := range []interface {
		Start(context.Context) error
		Stop(context.Context) error
	}{pub, m} {
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop(context.Background()) })
	}
	metrics := telemetry.NewMetrics()
	metrics.RegisterPools(func() []telemetry.PoolStat {
		return []telemetry.PoolStat{{Tenant: "default", Function: "hello", Version: 1, Idle: 1, Busy: 1, InFlight: 1, Queued: 2}}
	})
	tenantOf := func(*http.Request) string { return "default" }
	mux := http.NewServeMux()
	m.Routes(mux, tenantOf, func(*http.Request) bool { return true })
	mux.Handle("GET /api/v1/stats", metrics.StatsHandler(tenantOf))
	mux.HandleFunc("GET /api/v1/functions", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"functions": []FunctionView{
			{Name: "hello", Tenant: "default", Latest: 1, Instances: Instances{Idle: 1, Busy: 1}, InFlight: 1},
			{Name: "idle", Tenant: "default", Latest: 1},
		}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, pub, metrics, m
}

func TestUsageAndTopCommands(t *testing.T) {
	url, pub, metrics, meter := usageServer(t)
	now := time.Now()
	for i := range 10 {
		rec := metering.Record{ID: fmt.Sprint("r", i), Tenant: "default", Function: "hello", Trigger: "http", Start: now,
			DurationNS: 2_400_000, MemoryMB: 1024, Outcome: "ok", Cold: i == 0}
		pub.Record(&rec)
		metrics.Observe(&rec)
	}
	deadline := time.Now().Add(30 * time.Second)
	for meter.Stats().Applied < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("meter applied %d of 10", meter.Stats().Applied)
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := []string{"--server", url, "--key", "k"}

	code, out, errOut := runCLI(t, "", append(base, "usage")...)
	if code != 0 {
		t.Fatalf("usage: %d %s", code, errOut)
	}
	// 10 × 3 ms at 1 GB = 0.03 GB-s.
	for _, want := range []string{"FUNCTION", "hello", "10", "30", "0.030", "total", "$0.2 per 1M requests", "$0.0000166667 per GB-second"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "", append(base, "usage", "--by", "day", "-o", "json")...)
	var rep metering.UsageReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Total.BilledMS != 30 || rep.By != "day" {
		t.Fatalf("usage -o json: %d %s", code, out)
	}
	if code, _, errOut := runCLI(t, "", append(base, "usage", "--by", "week")...); code == 0 || !strings.Contains(errOut, "by=") {
		t.Fatalf("usage --by week: %d %s", code, errOut)
	}

	code, out, errOut = runCLI(t, "", append(base, "top", "--once", "--interval", "50ms")...)
	if code != 0 {
		t.Fatalf("top: %d %s", code, errOut)
	}
	t.Log("\n" + out)
	lines := strings.Split(out, "\n")
	if !strings.Contains(out, "REQ/S") || strings.Contains(out, "\x1b[") {
		t.Fatalf("top output:\n%s", out)
	}
	var helloLine string
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "hello") {
			helloLine = l
		}
	}
	for _, want := range []string{"1/2", "$0.000", "ms"} {
		if !strings.Contains(helloLine, want) {
			t.Errorf("top line for hello lacks %q: %q", want, helloLine)
		}
	}
}
