package triggers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

type fnInvoker struct {
	mu  sync.Mutex
	fns map[string]*testFn
}

type testFn struct {
	v     *registry.Version
	run   func(req *runtime.Request, body []byte, w http.ResponseWriter) error
	mu    sync.Mutex
	calls []call
}

type call struct {
	req  *runtime.Request
	body []byte
}

func newInvoker() *fnInvoker { return &fnInvoker{fns: map[string]*testFn{}} }

func (fi *fnInvoker) add(name string, cfg registry.Config, run func(req *runtime.Request, body []byte, w http.ResponseWriter) error) *testFn {
	f := &testFn{v: &registry.Version{Tenant: "default", Function: name, Number: 1, Config: cfg}, run: run}
	fi.mu.Lock()
	fi.fns[name] = f
	fi.mu.Unlock()
	return f
}

func (fi *fnInvoker) Resolve(t invoke.Target) (*registry.Version, error) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	f, ok := fi.fns[t.Function]
	if !ok || t.Tenant != "default" {
		return nil, apierr.New(apierr.FunctionNotFound, "no function named %q", t.Function)
	}
	return f.v, nil
}

func (fi *fnInvoker) Invoke(ctx context.Context, t invoke.Target, req *runtime.Request, w http.ResponseWriter) (*metering.Record, error) {
	v, err := fi.Resolve(t)
	if err != nil {
		return nil, err
	}
	fi.mu.Lock()
	f := fi.fns[t.Function]
	fi.mu.Unlock()
	body, _ := io.ReadAll(req.Body)
	f.mu.Lock()
	f.calls = append(f.calls, call{req: req, body: body})
	f.mu.Unlock()
	rec := &metering.Record{ID: req.InvocationID, Tenant: t.Tenant, Function: t.Function, Version: v.Number}
	if f.run == nil {
		return rec, nil
	}
	return rec, f.run(req, body, w)
}

func (f *testFn) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *testFn) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// envelopes decodes the event envelopes the function received.
func (f *testFn) envelopes(t *testing.T) []async.Envelope {
	t.Helper()
	var out []async.Envelope
	for _, c := range f.snapshot() {
		var e async.Envelope
		if err := json.Unmarshal(c.body, &e); err != nil {
			t.Fatalf("function got a body that is not an envelope: %q", c.body)
		}
		out = append(out, e)
	}
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openBus(t *testing.T, cfg bus.Config) *bus.Bus {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Logger = quiet()
	b, err := bus.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// node is one Nimbus node's event plane: an async service and a trigger service.
type node struct {
	async *async.Service
	trig  *Service
	mux   *http.ServeMux
	srv   *httptest.Server
}

func startNode(t *testing.T, b *bus.Bus, inv *fnInvoker) *node {
	t.Helper()
	as := async.New(async.Config{Bus: b, Invoker: inv, Logger: quiet(), BackoffBase: 50 * time.Millisecond, AckWait: 3 * time.Second, ScanInterval: 100 * time.Millisecond})
	if err := as.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts := New(Config{Bus: b, Invoker: inv, Async: as, Logger: quiet(), AckWait: 3 * time.Second})
	if err := ts.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := &node{async: as, trig: ts, mux: http.NewServeMux()}
	tenant := func(*http.Request) string { return "default" }
	as.Routes(n.mux, tenant)
	ts.Routes(n.mux, tenant)
	n.mux.Handle("/", ts.Handler())
	n.srv = httptest.NewServer(n.mux)
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t *testing.T) {
	if n.srv == nil {
		return
	}
	n.srv.Close()
	n.srv = nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.trig.Stop(ctx); err != nil {
		t.Error(err)
	}
	if err := n.async.Stop(ctx); err != nil {
		t.Error(err)
	}
}

// do sends a request to the node's HTTP server.
func (n *node) do(t *testing.T, method, path string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, n.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func (n *node) mustDo(t *testing.T, method, path, body string, want int) string {
	t.Helper()
	code, out := n.do(t, method, path, body, nil)
	if code != want {
		t.Fatalf("%s %s: %d %s (want %d)", method, path, code, out, want)
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func atLeast(f *testFn, n int) func() error {
	return func() error {
		if c := f.count(); c < n {
			return fmt.Errorf("%d calls, want ≥ %d", c, n)
		}
		return nil
	}
}

func intp(n int) *int { return &n }

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}
