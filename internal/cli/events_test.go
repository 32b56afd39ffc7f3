package cli

import (
	"context"
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
	"github.com/nimbusfn/nimbus/internal/triggers"
)

// evInvoker runs Go funcs as functions; the bus, async queue and triggers are real.
type evInvoker struct {
	mu    sync.Mutex
	fns   map[string]func(body []byte, w http.ResponseWriter) error
	calls map[string][]string
}

func (e *evInvoker) Resolve(t invoke.Target) (*registry.Version, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.fns[t.Function]; !ok {
		return nil, apierr.New(apierr.FunctionNotFound, "no function named %q", t.Function)
	}
	return &registry.Version{Tenant: t.Tenant, Function: t.Function, Number: 1, Config: registry.Config{Async: registry.Async{Retries: new(int)}}}, nil
}

func (e *evInvoker) Invoke(ctx context.Context, t invoke.Target, req *runtime.Request, w http.ResponseWriter) (*metering.Record, error) {
	if _, err := e.Resolve(t); err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(req.Body)
	e.mu.Lock()
	fn := e.fns[t.Function]
	e.calls[t.Function] = append(e.calls[t.Function], string(body))
	e.mu.Unlock()
	return &metering.Record{ID: req.InvocationID}, fn(body, w)
}

func (e *evInvoker) count(fn string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.calls[fn])
}

func eventsServer(t *testing.T, inv *evInvoker) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.Open(context.Background(), bus.Config{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	as := async.New(async.Config{Bus: b, Invoker: inv, Logger: log, BackoffBase: 20 * time.Millisecond, ScanInterval: 100 * time.Millisecond})
	ts := triggers.New(triggers.Config{Bus: b, Invoker: inv, Async: as, Logger: log})
	ctx := context.Background()
	if err := as.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ts.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ts.Stop(ctx)
		_ = as.Stop(ctx)
	})
	mux := http.NewServeMux()
	tenant := func(*http.Request) string { return "default" }
	as.Routes(mux, tenant)
	ts.Routes(mux, tenant)
	mux.Handle("/", ts.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEventCommands(t *testing.T) {
	inv := &evInvoker{calls: map[string][]string{}, fns: map[string]func([]byte, http.ResponseWriter) error{
		"shipping": func([]byte, http.ResponseWriter) error { return nil },
		"worker":   func([]byte, http.ResponseWriter) error { return nil },
		"bad": func([]byte, http.ResponseWriter) error {
			return runtime.Errorf(runtime.FunctionError, "no such customer")
		},
	}}
	url := eventsServer(t, inv)
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, "", append([]string{"--server", url, "--key", "k"}, args...)...)
	}
	must := func(want string, args ...string) string {
		t.Helper()
		code, out, errs := cli(args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("nimbus %s: code %d out %q err %q (want %q)", strings.Join(args, " "), code, out, errs, want)
		}
		return out
	}

	// Topics, triggers, publish.
	must("topic orders ready", "topic", "create", "orders")
	must("orders", "topic", "ls")
	code, _, errs := cli("trigger", "add", "shipping", "--topic", "nope")
	if code == 0 || !strings.Contains(errs, `topic "nope" is not declared`) {
		t.Fatalf("unknown topic: %d %q", code, errs)
	}
	code, _, errs = cli("trigger", "add", "shipping", "--schedule", "every day")
	if code == 0 || !strings.Contains(errs, "schedule.cron") {
		t.Fatalf("bad cron: %d %q", code, errs)
	}
	code, _, errs = cli("trigger", "add", "shipping", "--schedule", "@daily", "--topic", "orders")
	if code == 0 || !strings.Contains(errs, "exactly one") {
		t.Fatalf("two kinds: %d %q", code, errs)
	}
	must("trigger topic of shipping set: topic topic=orders types=[order.created]", "trigger", "add", "shipping", "--topic", "orders", "--type", "order.created")
	must("trigger nightly of shipping set: schedule cron=0 3 * * * timezone=Europe/Paris", "trigger", "add", "shipping", "--name", "nightly", "--schedule", "0 3 * * *", "--timezone", "Europe/Paris")
	must("trigger hook of shipping set: http method=POST path=/hooks/x webhook=sha256(X-Hub-Signature-256)", "trigger", "add", "shipping", "--name", "hook", "--route", "POST /hooks/x", "--webhook-secret", "s")
	out := must("nightly", "trigger", "ls", "shipping")
	if !strings.Contains(out, "topic") || !strings.Contains(out, "hook") || strings.Contains(out, `"s"`) {
		t.Fatalf("trigger ls: %s", out)
	}
	must("published event", "publish", "orders", "-d", `{"order":1}`, "--type", "order.created")
	waitFor(t, "the subscriber", func() bool { return inv.count("shipping") == 1 })
	must("trigger nightly of shipping deleted", "trigger", "rm", "shipping", "nightly")

	// Queues.
	must("queue jobs ready", "queue", "create", "jobs")
	must("trigger queue of worker set", "trigger", "add", "worker", "--queue", "jobs", "--batch", "5", "--window", "50ms")
	must("sent 2 message(s) to jobs", "queue", "send", "jobs", "-d", `[{"n":1},{"n":2}]`)
	waitFor(t, "the queue consumer", func() bool { return inv.count("worker") >= 1 })
	must("jobs", "queue", "ls")

	// Async failure → dead letters → invocation → replay → purge.
	resp, err := http.Post(url+"/async/bad", "application/json", strings.NewReader(`{"c":7}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Nimbus-Invocation-Id")
	if resp.StatusCode != 202 || id == "" {
		t.Fatalf("POST /async/bad: %d", resp.StatusCode)
	}
	waitFor(t, "the dead letter", func() bool {
		_, out, _ := cli("dlq", "ls", "bad")
		return strings.Contains(out, id)
	})
	out = must("no such customer", "dlq", "ls", "bad")
	if !strings.Contains(out, "async") {
		t.Fatalf("dlq ls: %s", out)
	}
	out = must("state:     failed (in dead letters)", "invocation", id)
	if !strings.Contains(out, "no such customer") {
		t.Fatalf("invocation: %s", out)
	}
	must(`"state": "failed"`, "invocation", id, "-o", "json")
	must("replayed 1 dead letter(s) of bad", "dlq", "replay", "bad", "--id", id)
	waitFor(t, "the replayed run", func() bool { return inv.count("bad") == 2 })
	waitFor(t, "the second dead letter", func() bool {
		_, out, _ := cli("dlq", "ls", "bad", "-o", "json")
		return strings.Contains(out, id)
	})
	must("purged 1 dead letter(s) of bad", "dlq", "purge", "bad")
	must("no dead letters for bad", "dlq", "ls", "bad")
	code, _, errs = cli("invocation", "nope")
	if code == 0 || !strings.Contains(errs, "not_found") {
		t.Fatalf("unknown invocation: %d %q", code, errs)
	}
}
