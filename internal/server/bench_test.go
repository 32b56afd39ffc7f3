package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// respWriter is a ResponseWriter that keeps its header map and counts the
// body, as little as a writer can do.
type respWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *respWriter) Header() http.Header { return w.h }
func (w *respWriter) WriteHeader(s int)   { w.status = s }
func (w *respWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGatewayHello measures what Nimbus adds to one warm request of
// examples/hello beyond net/http itself: the server's handler chain, the
// gateway, the invoke pipeline, metering and the guest, called in-process
// with the request the warm benchmark sends.
func BenchmarkGatewayHello(b *testing.B) {
	e := testenv.Start(b)
	e.Deploy("hello", hello(b), registry.Config{Scale: registry.Scale{Min: 1}})
	benchServe(b, e.Handler(), helloRequest(), "")
}

// helloRequest is the request the warm benchmark sends.
func helloRequest() *http.Request {
	req := httptest.NewRequest("GET", "/fn/hello?name=bench", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("User-Agent", "Go-http-client/1.1")
	req.Header.Set("Accept-Encoding", "gzip")
	return req
}

// benchServe serves req through h b.N times and reports the process CPU per
// request. A non-empty auth is set as the Authorization header before each
// request (the server strips it), and a traceparent the tracer added is
// removed, so that every request arrives alike.
func benchServe(b *testing.B, h http.Handler, req *http.Request, auth string) {
	w := &respWriter{h: http.Header{}}
	serve := func() {
		clear(w.h)
		w.status, w.n = 0, 0
		if auth != "" {
			req.Header["Authorization"] = []string{auth}
		}
		delete(req.Header, "Traceparent")
		h.ServeHTTP(w, req)
	}
	serve()
	if w.status != 200 || w.n == 0 {
		b.Fatalf("status %d, %d bytes", w.status, w.n)
	}
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		serve()
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkGatewayFeatures is BenchmarkGatewayHello with auth, metering and
// tracing each on or off: what each costs in CPU per request, background
// work (record batches, span exports to an in-process receiver) included.
func BenchmarkGatewayFeatures(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	}))
	defer sink.Close()
	for _, v := range []struct {
		name                 string
		auth, meter, tracing bool
	}{
		{"bare", false, false, false},
		{"auth", true, false, false},
		{"metering", false, true, false},
		{"tracing", false, false, true},
		{"full", true, true, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			e := testenv.Start(b, func(c *server.Config) {
				c.NoMetering = !v.meter
				if v.tracing {
					c.Tracing.Endpoint = sink.URL
				}
			})
			cfg := registry.Config{Scale: registry.Scale{Min: 1}}
			if v.auth {
				cfg.Auth = "key"
			}
			e.Deploy("hello", hello(b), cfg)
			auth := ""
			if v.auth {
				resp, body := e.Do("POST", "/api/v1/keys", []byte(`{"scopes":["invoke"],"name":"bench"}`))
				var k struct{ Key string }
				if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &k) != nil {
					b.Fatalf("creating a key: %d %s", resp.StatusCode, body)
				}
				auth = "Bearer " + k.Key
			}
			benchServe(b, e.Handler(), helloRequest(), auth)
		})
	}
}
