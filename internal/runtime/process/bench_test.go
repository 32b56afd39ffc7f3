//go:build linux

package process

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// benchInstance starts the test server once for a benchmark.
func benchInstance(b *testing.B) *Instance {
	b.Helper()
	tpl, _ := prepare(b, newRuntime(b), testServer(b), "", nil)
	return start(b, tpl)
}

// reportP50 records the median of per-operation times.
func reportP50(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkProxyWarm is a warm invocation through the process runtime's
// proxy (Invoke) of GET / on the test server.
func BenchmarkProxyWarm(b *testing.B) {
	in := benchInstance(b)
	hdr := http.Header{"Accept": {"*/*"}}
	d := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		rec := httptest.NewRecorder()
		err := in.Invoke(context.Background(), &runtime.Request{InvocationID: "bench", Method: "GET", Path: "/", Header: hdr, RemoteAddr: "127.0.0.1:1", Host: "bench"}, rec)
		d = append(d, time.Since(t0))
		if err != nil || rec.Code != 200 {
			b.Fatalf("%v %d", err, rec.Code)
		}
	}
	b.StopTimer()
	reportP50(b, d)
}

// BenchmarkDirectWarm calls the same server directly over a keep-alive
// connection with the client Invoke uses: the baseline for
// BenchmarkProxyWarm, whose difference is Invoke's own work.
func BenchmarkDirectWarm(b *testing.B) {
	in := benchInstance(b)
	c := newClient(in.addr, 4)
	defer c.closeIdle(true)
	ctx := context.Background()
	d := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", in.base+"/", nil)
		req.Header.Set("Accept", "*/*")
		resp, ex, err := c.roundTrip(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		ex.done(resp)
		d = append(d, time.Since(t0))
	}
	b.StopTimer()
	reportP50(b, d)
}

// BenchmarkColdStart is a cold start of the test server (start until it
// answers on $PORT, then close) without and with the template's spare.
func BenchmarkColdStart(b *testing.B) {
	for _, withSpare := range []bool{false, true} {
		name := "fresh"
		if withSpare {
			name = "spare"
		}
		b.Run(name, func(b *testing.B) {
			rt := newRuntime(b)
			rt.spares.SetOff(!withSpare)
			tpl0, _ := prepare(b, rt, testServer(b), "", nil)
			tpl := tpl0.(*Template)
			samples := make([]time.Duration, 0, b.N)
			var last *Instance
			for b.Loop() {
				if withSpare {
					// A function back from zero: its spare was made meanwhile.
					b.StopTimer()
					deadline := time.Now().Add(20 * time.Second)
					for in, ok := tpl.spares.Peek(); !ok || in == last; in, ok = tpl.spares.Peek() {
						if time.Now().After(deadline) {
							b.Fatal("no spare was made")
						}
						time.Sleep(time.Millisecond)
					}
					last, _ = tpl.spares.Peek()
					b.StartTimer()
				}
				t0 := time.Now()
				inst, err := tpl.NewInstance(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(t0))
				_ = inst.Close()
			}
			reportP50(b, samples)
		})
	}
}
