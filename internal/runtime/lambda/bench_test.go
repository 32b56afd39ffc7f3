package lambda

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// BenchmarkColdStart compares, in one run, process start → first response of
//
//   - bare:      a tiny Go HTTP server started with os/exec, answering one
//     request on a listener it inherits (no polling: the request waits in the
//     kernel's accept queue) — the floor for any process runtime;
//
//   - golambda-exec: the aws-lambda-go bootstrap started with os/exec against
//     this package's Runtime API server, without the sandbox;
//
//   - golambda-sandbox: the same, started by the sandbox package;
//
//   - nimbus:    the same bootstrap through Template.NewInstance + Invoke, as
//     the invoker drives it (sandbox, environment, Runtime API, event).
//
//   - nimbus-spare: the same, with the template's spare (made ahead, held
//     before its first instruction) ready, as for a function back from zero.
//
// Each reports its median as ms-p50 besides the mean ns/op. Run with
// go test -run '^$' -bench ColdStart -benchtime 40x ./internal/runtime/lambda/
func BenchmarkColdStart(b *testing.B) {
	needBuilds(b)
	b.Run("bare", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for b.Loop() {
			samples = append(samples, bareColdStart(b))
		}
		reportP50(b, samples)
	})
	b.Run("golambda-exec", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for b.Loop() {
			samples = append(samples, execLambdaColdStart(b, false))
		}
		reportP50(b, samples)
	})
	b.Run("golambda-sandbox", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for b.Loop() {
			samples = append(samples, execLambdaColdStart(b, true))
		}
		reportP50(b, samples)
	})
	for _, spare := range []bool{false, true} {
		name := "nimbus"
		if spare {
			name = "nimbus-spare"
		}
		b.Run(name, func(b *testing.B) {
			rt := New(Config{CacheDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			rt.spares.SetOff(!spare)
			tpl, err := rt.Prepare(context.Background(), testSpec(runtime.Lambda, "bench", nil), readFile(b, goLambdaPath))
			if err != nil {
				b.Fatal(err)
			}
			defer tpl.Close()
			samples := make([]time.Duration, 0, b.N)
			for b.Loop() {
				if spare {
					// A function back from zero: its spare was made meanwhile.
					b.StopTimer()
					waitSpare(b, tpl.(*template))
					b.StartTimer()
				}
				samples = append(samples, nimbusColdStart(b, tpl))
			}
			reportP50(b, samples)
		})
	}
}

// waitSpare waits until t holds a spare instance.
func waitSpare(tb testing.TB, t *template) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := t.spares.Peek(); ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("no spare instance was made")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func reportP50(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2])/1e6, "ms-p50")
}

func bareColdStart(b *testing.B) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(barePath)
	cmd.ExtraFiles = []*os.File{f}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if string(body) != `{"hello":"world"}` {
		b.Fatalf("bare answered %q", body)
	}
	_ = cmd.Wait()
	return d
}

func execLambdaColdStart(b *testing.B, sandboxed bool) time.Duration {
	api, err := newAPIServer(slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer api.close()
	env := []string{"AWS_LAMBDA_RUNTIME_API=" + api.addr()}
	inv := &invocation{id: "bench", event: []byte(`{"op":"add","a":1,"b":2}`), deadline: time.Now().Add(time.Minute),
		arn: functionARN("bench"), traceID: "Root=1-bench", done: make(chan apiResult, 1)}
	var exited <-chan struct{} // nil: never, for os/exec
	t0 := time.Now()
	if sandboxed {
		p, err := startProc(context.Background(), procConfig{Args: []string{goLambdaPath}, Dir: "/", Env: env, MemoryMB: 256})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Kill()
		exited = p.Done()
	} else {
		cmd := exec.Command(goLambdaPath)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	}
	var res apiResult
	select {
	case api.events <- inv:
		res = <-inv.done
	case <-exited:
		b.Fatal("bootstrap exited before asking for an event")
	}
	d := time.Since(t0)
	if string(res.body) != `{"sum":3}` {
		b.Fatalf("golambda answered %+v", res)
	}
	return d
}

func nimbusColdStart(b *testing.B, tpl runtime.Template) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &runtime.Request{InvocationID: "bench", Raw: true, Header: http.Header{},
		Body: strings.NewReader(`{"op":"add","a":1,"b":2}`), ContentLength: -1}
	w := httptest.NewRecorder()
	t0 := time.Now()
	inst, err := tpl.NewInstance(ctx)
	if err != nil {
		b.Fatal(err)
	}
	err = inst.Invoke(ctx, req, w)
	d := time.Since(t0)
	_ = inst.Close()
	if err != nil || w.Body.String() != `{"sum":3}` {
		b.Fatalf("nimbus answered %q, %v", w.Body, err)
	}
	return d
}

// BenchmarkWarmInvoke is one raw event through a warm aws-lambda-go instance.
func BenchmarkWarmInvoke(b *testing.B) {
	needBuilds(b)
	rt := New(Config{CacheDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	tpl, err := rt.Prepare(ctx, testSpec(runtime.Lambda, "bench", nil), readFile(b, goLambdaPath))
	if err != nil {
		b.Fatal(err)
	}
	inst, err := tpl.NewInstance(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close()
	samples := make([]time.Duration, 0, b.N)
	for b.Loop() {
		req := &runtime.Request{InvocationID: "warm", Raw: true, Header: http.Header{},
			Body: strings.NewReader(`{"op":"add","a":1,"b":2}`), ContentLength: -1}
		w := httptest.NewRecorder()
		t0 := time.Now()
		if err := inst.Invoke(ctx, req, w); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(t0))
	}
	reportP50(b, samples)
}
