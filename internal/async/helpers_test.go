package async

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// fnInvoker is a test invoker: functions are Go funcs; NATS is real.
type fnInvoker struct {
	mu  sync.Mutex
	fns map[string]*testFn
}

type testFn struct {
	v     *registry.Version
	run   func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error
	mu    sync.Mutex
	calls []call
}

type call struct {
	at   time.Time
	req  *runtime.Request
	body []byte
}

func newInvoker() *fnInvoker { return &fnInvoker{fns: map[string]*testFn{}} }

func (fi *fnInvoker) add(name string, cfg registry.Config, run func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error) *testFn {
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
	f.calls = append(f.calls, call{at: time.Now(), req: req, body: body})
	f.mu.Unlock()
	rec := &metering.Record{ID: req.InvocationID, Tenant: t.Tenant, Function: t.Function, Version: v.Number}
	if f.run == nil {
		return rec, nil
	}
	return rec, f.run(ctx, req, body, w)
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

func openBus(t testing.TB, dir string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startService starts a Service on b with fast retries for tests.
func startService(t testing.TB, b *bus.Bus, inv Invoker, mod func(*Config)) *Service {
	t.Helper()
	cfg := Config{Bus: b, Invoker: inv, Node: "test", Logger: quietLogger(), BackoffBase: 50 * time.Millisecond, AckWait: 3 * time.Second, ScanInterval: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return s
}

// eventually polls cond until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() error) {
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

func intp(n int) *int { return &n }

func waitState(t testing.TB, s *Service, id, state string) *Status {
	t.Helper()
	var st *Status
	eventually(t, 20*time.Second, func() error {
		var err error
		st, err = s.Status(context.Background(), id)
		if err != nil {
			return err
		}
		if st.State != state {
			return fmt.Errorf("state %s, want %s", st.State, state)
		}
		return nil
	})
	return st
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
