package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/server"
)

func init() {
	addSuite("overhead", "Cost of auth, metering and tracing on the warm path", overheadSuite)
}

// otlpSink is an in-process OTLP/HTTP receiver that reads and counts what
// it is sent, so tracing pays for a real export.
type otlpSink struct {
	srv      *http.Server
	url      string
	requests atomic.Int64
	bytes    atomic.Int64
}

func newOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	})}
	go s.srv.Serve(ln)
	return s, nil
}

// createInvokeKey issues an invoke-scoped key of the default tenant (the
// bench talks to the server over loopback, which acts as admin).
func createInvokeKey(base string) (string, error) {
	resp, err := http.Post(base+"/api/v1/keys", "application/json", bytes.NewReader([]byte(`{"scopes":["invoke"],"name":"bench"}`)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var k struct{ Key string }
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &k) != nil || k.Key == "" {
		return "", fmt.Errorf("creating a key: %d %s", resp.StatusCode, b)
	}
	return k.Key, nil
}

// overheadVariant is one server configuration of the overhead suite.
type overheadVariant struct {
	name                 string
	auth, meter, tracing bool
	url                  string
	header               http.Header
	res                  result
}

// overheadSuite runs the same warm load against servers in one run: one with
// everything on (function auth "key" and a key on every request, metering,
// tracing exported to an in-process OTLP receiver), one bare (auth public,
// metering off with Config.NoMetering, no tracing), and one with each part
// alone to show where the cost is.
func overheadSuite() error {
	code, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	sink, err := newOTLPSink()
	if err != nil {
		return err
	}
	defer sink.srv.Close()

	vs := []*overheadVariant{
		{name: "bare: auth public, metering off, no tracing"},
		{name: "auth only: auth key, a key on every request", auth: true},
		{name: "metering only", meter: true},
		{name: "tracing only: spans exported over OTLP/HTTP", tracing: true},
		{name: "full: auth key, metering, tracing", auth: true, meter: true, tracing: true},
	}
	for _, v := range vs {
		s, stop, err := startNimbus(func(c *server.Config) {
			c.NoMetering = !v.meter
			if v.tracing {
				c.Tracing.Endpoint = sink.url
			}
		})
		if err != nil {
			return err
		}
		defer stop()
		fc := map[string]any{"scale": map[string]any{"min": *conns}}
		if v.auth {
			fc["auth"] = "key"
		}
		if err := deploy(s.URL(), "hello", code, fc); err != nil {
			return err
		}
		v.url = s.URL() + "/fn/hello?name=bench"
		if v.auth {
			key, err := createInvokeKey(s.URL())
			if err != nil {
				return err
			}
			v.header = http.Header{"Authorization": {"Bearer " + key}}
			// The keyed function refuses a call without its key.
			if r := loadHeader(v.url, nil, 1, 50*time.Millisecond); r.requests != 0 {
				return fmt.Errorf("the auth: key function answered %d calls without a key", r.requests)
			}
		}
	}
	// Interleave short rounds, so that the machine's noise falls on every
	// variant; the order changes every round, so that the background work a
	// server leaves behind (span exports, record batches, garbage) does not
	// always fall on the same next variant. Each round's full/bare ratio
	// pairs two segments a second apart; their median is the figure, being
	// what most rounds saw rather than what the noisiest ones did.
	//
	// No collection is forced between segments: with the five servers'
	// guest memories in this heap (~480 MB live), a forced collection let
	// the runtime hand back hundreds of MB that the next segments then
	// faulted in again (up to 15% of a profile's CPU). An unmeasured tenth
	// of a segment first brings each variant's connections and instances
	// back to their steady state. Longer segments (-seg) leave less of a
	// variant's background work (a metering batch is flushed within 100 ms)
	// to the segment after it.
	rounds := max(8, int(*duration / *segment))
	seg := *duration / time.Duration(rounds)
	per := make([][]float64, len(vs)) // per variant, each round's req/s
	for i := 0; i < rounds; i++ {
		for _, j := range rand.Perm(len(vs)) {
			v := vs[j]
			loadHeader(v.url, v.header, *conns, seg/10)
			r := loadHeader(v.url, v.header, *conns, seg)
			per[j] = append(per[j], r.rps())
			v.res = merge(v.res, r)
		}
	}
	median := func(j int) float64 {
		ratios := make([]float64, rounds)
		for i := range ratios {
			ratios[i] = per[j][i] / per[0][i]
		}
		slices.Sort(ratios)
		if rounds%2 == 1 {
			return ratios[rounds/2]
		}
		return (ratios[rounds/2-1] + ratios[rounds/2]) / 2
	}
	if *cpuProf != "" {
		for j, v := range vs {
			loadHeader(v.url, v.header, *conns, *duration/10)
			if err := profileLoadHeader(fmt.Sprintf("%s.%d", *cpuProf, j), v.url, v.header); err != nil {
				return err
			}
		}
	}
	// Let the tracer flush, so the export counts show it ran.
	deadline := time.Now().Add(5 * time.Second)
	for sink.requests.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	bare, full := vs[0].res, vs[len(vs)-1].res
	fmt.Printf("%d connections, %s per server in %d interleaved rounds of %s segments, keep-alive, loopback; hello (Go wasm) with scale.min = %d.\n\n", *conns, *duration, rounds, seg, *conns)
	fmt.Println("| server | req/s | vs bare (all rounds) | vs bare (median of rounds) | p50 | p99 | CPU per request | errors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for j, v := range vs {
		r := v.res
		fmt.Printf("| %s | %.0f | %.3f | %.3f | %s | %s | %s | %d |\n", v.name, r.rps(), r.rps()/bare.rps(), median(j), us(r.pct(.5)), us(r.pct(.99)), us(r.cpuPerRequest()), r.errors)
	}
	ratio := median(len(vs) - 1)
	verdict := "within"
	if ratio < 0.9 {
		verdict = "OVER"
	}
	fmt.Printf("\n**ratio** full/bare throughput, median of %d paired rounds = **%.3f** (all rounds together: %.3f; auth + metering + tracing cost %.1f%% of throughput, %s the 10%% budget); added p50 = %s, p99 = %s\n",
		rounds, ratio, full.rps()/bare.rps(), (1-ratio)*100, verdict, us(full.pct(.5)-bare.pct(.5)), us(full.pct(.99)-bare.pct(.99)))
	fmt.Printf("\nOTLP receiver: %d export requests, %d KB.\n", sink.requests.Load(), sink.bytes.Load()/1024)
	return nil
}
