package wasm

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// cpuTime reports the CPU time this process has used. On a shared machine it
// is a steadier measure than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds a cpu-ns/op metric for the loop that started at start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// discard is a ResponseWriter that keeps nothing but its header map.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWarmInvoke measures one request on a warm instance of
// examples/hello: the request crosses the ABI, the Go handler runs, and the
// response is written.
func BenchmarkWarmInvoke(b *testing.B) {
	r := newRuntime(b)
	in := newInstance(b, prepare(b, r, runtime.Spec{Function: "hello"}, helloMod.get(b)))
	req := request("GET", "/?name=Ada", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	w := &discard{h: http.Header{}}
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		clear(w.h)
		if err := in.Invoke(ctx, req, w); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkColdInstance measures a cold start of examples/hello without a
// snapshot: instantiate, _initialize, nimbus_init, first request, close.
func BenchmarkColdInstance(b *testing.B) {
	r := newRuntime(b)
	tpl := prepare(b, r, runtime.Spec{Function: "hello"}, helloMod.get(b))
	benchCold(b, tpl)
}

// BenchmarkColdSnapshot measures a cold start of examples/hello from its
// snapshot: instantiate, first request, close.
func BenchmarkColdSnapshot(b *testing.B) {
	r := newRuntime(b)
	tpl := prepare(b, r, runtime.Spec{Function: "hello", Snapshot: true}, helloMod.get(b))
	if !isSnapshot(tpl) {
		b.Fatal("no snapshot")
	}
	benchCold(b, tpl)
}

// BenchmarkColdTinyCGI measures a fresh instance of a tiny (non-Go) command
// module per request, as wasm-cgi runs it.
func BenchmarkColdTinyCGI(b *testing.B) {
	r := newRuntime(b)
	in := newInstance(b, prepare(b, r, runtime.Spec{Runtime: runtime.WasmCGI}, tinyModule(nil, "_start")))
	req := request("GET", "/", nil)
	ctx := context.Background()
	w := &discard{h: http.Header{}}
	start := cpuTime()
	for b.Loop() {
		// The tiny module writes nothing, which CGI calls a bad response:
		// this measures the instance, not the parse.
		if err := in.Invoke(ctx, req, w); runtime.KindOf(err) != runtime.BadResponse {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkWarmTiny measures the host side of a warm invocation: a tiny
// non-Go reactor whose nimbus_handle returns at once.
func BenchmarkWarmTiny(b *testing.B) {
	r := newRuntime(b)
	in := newInstance(b, prepare(b, r, runtime.Spec{}, tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32")))
	req := request("GET", "/?name=Ada", nil)
	w := &discard{h: http.Header{}}
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		clear(w.h)
		if err := in.Invoke(ctx, req, w); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkColdTiny measures a cold start of a tiny non-Go reactor:
// instantiate, first request, close.
func BenchmarkColdTiny(b *testing.B) {
	r := newRuntime(b)
	tpl := prepare(b, r, runtime.Spec{}, tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32"))
	benchCold(b, tpl)
}

// benchCold measures instances of tpl that each serve one request:
// instantiate, first request, close.
func benchCold(b *testing.B, tpl runtime.Template) {
	req := request("GET", "/?name=Ada", nil)
	w := &discard{h: http.Header{}}
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		in, err := tpl.NewInstance(ctx)
		if err != nil {
			b.Fatal(err)
		}
		clear(w.h)
		if err := in.Invoke(ctx, req, w); err != nil {
			b.Fatal(err)
		}
		_ = in.Close()
	}
	reportCPU(b, start)
}
