package async

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

func postAsync(t *testing.T, s *Service, inv *fnInvoker, target string, body []byte, hdr http.Header) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	s.Routes(mux, func(*http.Request) string { return "default" })
	r := httptest.NewRequest(http.MethodPost, "/async/"+target, bytes.NewReader(body))
	for k, vs := range hdr {
		r.Header[k] = vs
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func TestRetryTwiceThenSucceed(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	var n atomic.Int32
	fn := inv.add("flaky", registry.Config{Runtime: "process"}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		if n.Add(1) <= 2 {
			return runtime.Errorf(runtime.Crashed, "boom %d", n.Load())
		}
		w.WriteHeader(201)
		_, _ = w.Write([]byte("done"))
		return nil
	})
	s := startService(t, b, inv, nil)
	id, err := s.Enqueue(context.Background(), Target{Tenant: "default", Function: "flaky"}, &runtime.Request{Method: "POST", Path: "/x", Body: strings.NewReader("hi"), Header: http.Header{}})
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, s, id, StateSucceeded)
	if st.Attempts != 3 || st.StatusCode != 201 || st.Result == nil || st.Result.Text != "done" {
		t.Fatalf("status = %+v", st)
	}
	calls := fn.snapshot()
	if len(calls) != 3 {
		t.Fatalf("called %d times, want 3", len(calls))
	}
	for i, c := range calls {
		if got := c.req.Header.Get("X-Nimbus-Attempt"); got != fmt.Sprint(i+1) {
			t.Errorf("call %d: X-Nimbus-Attempt %q", i, got)
		}
		if c.req.Header.Get("X-Nimbus-Trigger") != "async" || c.req.Header.Get("X-Nimbus-Invocation-Id") != id {
			t.Errorf("call %d: headers %v", i, c.req.Header)
		}
		if string(c.body) != "hi" || c.req.Path != "/x" {
			t.Errorf("call %d: body %q path %q", i, c.body, c.req.Path)
		}
	}
	// Exponential backoff: ≥ 50 ms before the 2nd call, ≥ 100 ms before the 3rd.
	if g := calls[1].at.Sub(calls[0].at); g < 50*time.Millisecond {
		t.Errorf("first retry after %s, want ≥ 50ms", g)
	}
	if g := calls[2].at.Sub(calls[1].at); g < 100*time.Millisecond {
		t.Errorf("second retry after %s, want ≥ 100ms", g)
	}
	// Nothing left to deliver: exactly three calls.
	cons, err := b.JS.Consumer(context.Background(), bus.StreamAsync, "async_default_flaky")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		ci, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if ci.NumPending+uint64(ci.NumAckPending)+uint64(ci.NumRedelivered) != 0 {
			return fmt.Errorf("pending %d ack-pending %d", ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
	if fn.count() != 3 {
		t.Fatalf("called %d times, want 3", fn.count())
	}
}

func TestDeadLetterAndReplay(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	var fail atomic.Bool
	fail.Store(true)
	fn := inv.add("bad", registry.Config{Runtime: "process", Async: registry.Async{Retries: intp(1)}}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		if fail.Load() {
			w.WriteHeader(500)
			_, _ = w.Write([]byte("database down"))
		}
		return nil
	})
	s := startService(t, b, inv, nil)
	ctx := context.Background()
	id, err := s.Enqueue(ctx, Target{Tenant: "default", Function: "bad"}, &runtime.Request{Body: strings.NewReader(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, s, id, StateFailed)
	if st.Attempts != 2 || !st.DeadLetter || !strings.Contains(st.Error, "500") {
		t.Fatalf("status = %+v", st)
	}
	if fn.count() != 2 {
		t.Fatalf("called %d times, want retries+1 = 2", fn.count())
	}
	dls, err := s.List(ctx, "default", "bad")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].ID != id || dls[0].Attempts != 2 || !strings.Contains(dls[0].Error, "500") || string(dls[0].Job.Body) != `{"a":1}` {
		t.Fatalf("dead letters = %+v", dls)
	}

	// Over HTTP.
	mux := http.NewServeMux()
	s.Routes(mux, func(*http.Request) string { return "default" })
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/functions/bad/dlq", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), id) {
		t.Fatalf("GET dlq: %d %s", w.Code, w.Body)
	}

	// Replay once the function is fixed.
	fail.Store(false)
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", "/api/v1/functions/bad/dlq/replay", strings.NewReader(`{"ids":["`+id+`"]}`)))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"replayed":1`) {
		t.Fatalf("replay: %d %s", w.Code, w.Body)
	}
	st = waitState(t, s, id, StateSucceeded)
	if st.Attempts != 1 || fn.count() != 3 {
		t.Fatalf("after replay: status %+v, calls %d", st, fn.count())
	}
	if dls, _ := s.List(ctx, "default", "bad"); len(dls) != 0 {
		t.Fatalf("dead letters after replay: %+v", dls)
	}

	// Purge.
	fail.Store(true)
	id2, _ := s.Enqueue(ctx, Target{Tenant: "default", Function: "bad"}, &runtime.Request{})
	waitState(t, s, id2, StateFailed)
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("DELETE", "/api/v1/functions/bad/dlq", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"purged":1`) {
		t.Fatalf("purge: %d %s", w.Code, w.Body)
	}
	if dls, _ := s.List(ctx, "default", "bad"); len(dls) != 0 {
		t.Fatalf("dead letters after purge: %+v", dls)
	}
}

func TestMaxAgeDeadLettersUnrun(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	fn := inv.add("old", registry.Config{Runtime: "process", Async: registry.Async{MaxAge: registry.Duration(time.Millisecond)}}, nil)
	s := New(Config{Bus: b, Invoker: inv, Logger: quietLogger()})
	id, err := s.Enqueue(context.Background(), Target{Tenant: "default", Function: "old"}, &runtime.Request{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the event must age beyond its 1 ms max_age
	s = startService(t, b, inv, nil)
	st := waitState(t, s, id, StateFailed)
	if !strings.Contains(st.Error, "max_age") || fn.count() != 0 {
		t.Fatalf("status %+v, calls %d", st, fn.count())
	}
}

func TestHTTPAsyncAndStatus(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	fn := inv.add("echo", registry.Config{Runtime: "process"}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(req.Method + " " + req.Path + "?" + req.RawQuery + " " + string(body) + " " + req.Header.Get("X-Custom")))
		return nil
	})
	s := startService(t, b, inv, nil)
	w := postAsync(t, s, inv, "echo@live/a/b?q=1", []byte("payload"), http.Header{"X-Custom": {"yes"}})
	if w.Code != 202 {
		t.Fatalf("POST /async: %d %s", w.Code, w.Body)
	}
	var out struct {
		ID        string `json:"id"`
		StatusURL string `json:"status_url"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	if out.ID == "" || w.Header().Get("X-Nimbus-Invocation-Id") != out.ID || out.StatusURL != "/api/v1/invocations/"+out.ID {
		t.Fatalf("202 body %s headers %v", w.Body, w.Header())
	}
	waitState(t, s, out.ID, StateSucceeded)
	mux := http.NewServeMux()
	s.Routes(mux, func(*http.Request) string { return "default" })
	rw := httptest.NewRecorder()
	mux.ServeHTTP(rw, httptest.NewRequest("GET", out.StatusURL, nil))
	var st Status
	if err := json.Unmarshal(rw.Body.Bytes(), &st); err != nil || rw.Code != 200 {
		t.Fatalf("status: %d %s", rw.Code, rw.Body)
	}
	if st.Result == nil || st.Result.Text != "POST /a/b?q=1 payload yes" || st.Result.ContentType != "text/plain" {
		t.Fatalf("status %+v", st)
	}
	if fn.count() != 1 {
		t.Fatalf("calls %d", fn.count())
	}
	// Other tenants and unknown ids get 404.
	for _, tc := range []struct{ tenant, path string }{{"other", out.StatusURL}, {"default", "/api/v1/invocations/nope"}} {
		mux := http.NewServeMux()
		s.Routes(mux, func(*http.Request) string { return tc.tenant })
		rw := httptest.NewRecorder()
		mux.ServeHTTP(rw, httptest.NewRequest("GET", tc.path, nil))
		if rw.Code != 404 {
			t.Errorf("%s as %s: %d", tc.path, tc.tenant, rw.Code)
		}
	}
}

func TestIdempotencyKeyRunsOnce(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	fn := inv.add("pay", registry.Config{Runtime: "process"}, nil)
	s := startService(t, b, inv, nil)
	h := http.Header{"Idempotency-Key": {"order-42"}}
	w1 := postAsync(t, s, inv, "pay", []byte("x"), h)
	w2 := postAsync(t, s, inv, "pay", []byte("x"), h)
	if w1.Code != 202 || w2.Code != 202 {
		t.Fatalf("codes %d %d", w1.Code, w2.Code)
	}
	id1, id2 := w1.Header().Get("X-Nimbus-Invocation-Id"), w2.Header().Get("X-Nimbus-Invocation-Id")
	if id1 != id2 {
		t.Fatalf("ids differ: %s %s", id1, id2)
	}
	waitState(t, s, id1, StateSucceeded)
	// A third, different key runs; once it has, the duplicate has had every chance to run.
	w3 := postAsync(t, s, inv, "pay", []byte("x"), http.Header{"Idempotency-Key": {"order-43"}})
	waitState(t, s, w3.Header().Get("X-Nimbus-Invocation-Id"), StateSucceeded)
	if fn.count() != 2 {
		t.Fatalf("calls %d, want 2 (one per key)", fn.count())
	}
}

func TestBadInput(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	inv.add("f", registry.Config{Runtime: "process"}, nil)
	// Not started: nothing consumes, so the queue fills.
	s := New(Config{Bus: b, Invoker: inv, Logger: quietLogger(), StreamMaxMsgs: 5})
	cases := []struct {
		name   string
		target string
		body   []byte
		hdr    http.Header
		status int
		code   string
	}{
		{"unknown function", "nope", nil, nil, 404, "function_not_found"},
		{"bad name", "Bad_Name", nil, nil, 400, "invalid_name"},
		{"payload over 1 MB", "f", bytes.Repeat([]byte("a"), 1<<20+1), nil, 413, "payload_too_large"},
		{"long idempotency key", "f", nil, http.Header{"Idempotency-Key": {strings.Repeat("k", 257)}}, 400, "bad_request"},
		{"bad callback", "f", nil, http.Header{"X-Callback-Url": {"ftp://x"}}, 400, "bad_request"},
	}
	for _, tc := range cases {
		w := postAsync(t, s, inv, tc.target, tc.body, tc.hdr)
		code, _, _ := apierr.Decode(w.Body.Bytes())
		if w.Code != tc.status || code != tc.code {
			t.Errorf("%s: %d %s", tc.name, w.Code, w.Body)
		}
	}
	// Exactly 1 MB is fine.
	if w := postAsync(t, s, inv, "f", bytes.Repeat([]byte("a"), 1<<20), nil); w.Code != 202 {
		t.Fatalf("1 MB: %d %s", w.Code, w.Body)
	}
	// Flood: the stream holds 5; the 6th is refused with 429 and Retry-After.
	for i := 0; i < 4; i++ {
		if w := postAsync(t, s, inv, "f", []byte("x"), nil); w.Code != 202 {
			t.Fatalf("message %d: %d %s", i+2, w.Code, w.Body)
		}
	}
	w := postAsync(t, s, inv, "f", []byte("x"), nil)
	if code, _, _ := apierr.Decode(w.Body.Bytes()); w.Code != 429 || code != "too_many_requests" || w.Header().Get("Retry-After") == "" {
		t.Fatalf("flood: %d %s %v", w.Code, w.Body, w.Header())
	}
	// Nothing refused was stored.
	info, err := b.JS.Stream(context.Background(), bus.StreamAsync)
	if err != nil {
		t.Fatal(err)
	}
	si, _ := info.Info(context.Background())
	if si.State.Msgs != 5 {
		t.Fatalf("stream holds %d messages, want 5", si.State.Msgs)
	}
}

func TestEventEnvelope(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	fn := inv.add("ev", registry.Config{Runtime: "process"}, nil)
	s := startService(t, b, inv, nil)
	ev := Envelope{Kind: "schedule", Source: "nightly", Type: "nimbus.schedule.tick"}
	ev.SetData([]byte(`{"x":1}`), "")
	id, err := s.EnqueueEvent(context.Background(), Target{Tenant: "default", Function: "ev"}, ev, Options{MsgID: "tick-1"})
	if err != nil {
		t.Fatal(err)
	}
	// Same MsgID: de-duplicated, same id.
	id2, err := s.EnqueueEvent(context.Background(), Target{Tenant: "default", Function: "ev"}, ev, Options{MsgID: "tick-1"})
	if err != nil || id2 != id {
		t.Fatalf("second enqueue: %s %v", id2, err)
	}
	waitState(t, s, id, StateSucceeded)
	c := fn.snapshot()
	if len(c) != 1 {
		t.Fatalf("calls %d", len(c))
	}
	var got Envelope
	if err := json.Unmarshal(c[0].body, &got); err != nil {
		t.Fatal(err)
	}
	if !c[0].req.Raw || c[0].req.Method != "POST" || c[0].req.Path != "/" || c[0].req.Trigger != "schedule" {
		t.Fatalf("request %+v", c[0].req)
	}
	if got.Kind != "schedule" || got.Attempt != 1 || got.ID != id || got.Source != "nightly" || string(got.Data) != `{"x":1}` || got.Time.IsZero() {
		t.Fatalf("envelope %+v", got)
	}
	var e Envelope
	e.SetData([]byte("plain"), "text/plain")
	e2 := Envelope{}
	e2.SetData([]byte{0xff, 0x00}, "")
	if string(e.Data) != `"plain"` || e2.DataBase64 != "/wA=" {
		t.Fatalf("SetData: %s %q", e.Data, e2.DataBase64)
	}
}

func TestDestinationsAndCallback(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	inv.add("work", registry.Config{Runtime: "process", Async: registry.Async{OnSuccess: "function:audit", Retries: intp(0), OnFailure: "function:audit"}}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		if string(body) == "fail" {
			return runtime.Errorf(runtime.FunctionError, "bad input")
		}
		_, _ = w.Write([]byte("ok:" + string(body)))
		return nil
	})
	audit := inv.add("audit", registry.Config{Runtime: "process"}, nil)
	var mu sync.Mutex
	var cbs []Result
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res Result
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &res)
		mu.Lock()
		cbs = append(cbs, res)
		mu.Unlock()
	}))
	defer srv.Close()
	s := startService(t, b, inv, func(c *Config) { c.CallbackLoopback = true })
	w := postAsync(t, s, inv, "work", []byte("a"), http.Header{"X-Callback-Url": {srv.URL + "/cb"}})
	id := w.Header().Get("X-Nimbus-Invocation-Id")
	w = postAsync(t, s, inv, "work", []byte("fail"), nil)
	failID := w.Header().Get("X-Nimbus-Invocation-Id")
	eventually(t, 20*time.Second, func() error {
		if audit.count() != 2 {
			return fmt.Errorf("audit called %d times", audit.count())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(cbs) != 1 {
			return fmt.Errorf("%d callbacks", len(cbs))
		}
		return nil
	})
	if cbs[0].ID != id || cbs[0].State != StateSucceeded || cbs[0].Response == nil || cbs[0].Response.Text != "ok:a" {
		t.Fatalf("callback %+v", cbs[0])
	}
	states := map[string]string{}
	for _, c := range audit.snapshot() {
		var env Envelope
		_ = json.Unmarshal(c.body, &env)
		var res Result
		_ = json.Unmarshal(env.Data, &res)
		if env.Kind != "destination" {
			t.Errorf("envelope kind %q", env.Kind)
		}
		states[res.ID] = res.State
		if res.State == StateFailed && !strings.Contains(res.Error, "bad input") {
			t.Errorf("failure result %+v", res)
		}
	}
	if states[id] != StateSucceeded || states[failID] != StateFailed {
		t.Fatalf("destination states %v", states)
	}
}

func TestConcurrencyBoundedPerFunction(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	var cur, peak atomic.Int32
	release := make(chan struct{})
	fn := inv.add("slow", registry.Config{Runtime: "process", Scale: registry.Scale{Max: 2}, Concurrency: 1}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
		return nil
	})
	s := startService(t, b, inv, nil)
	for i := 0; i < 20; i++ {
		if _, err := s.Enqueue(context.Background(), Target{Tenant: "default", Function: "slow"}, &runtime.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if fn.count() < 2 {
			return errors.New("not started")
		}
		return nil
	})
	close(release)
	eventually(t, 20*time.Second, func() error {
		if fn.count() != 20 {
			return fmt.Errorf("%d of 20 ran", fn.count())
		}
		return nil
	})
	if p := peak.Load(); p > 2 {
		t.Fatalf("peak concurrency %d, want ≤ scale.max × concurrency = 2", p)
	}
}

func TestUnknownFunctionAtDeliveryFailsAtOnce(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	inv.add("gone", registry.Config{Runtime: "process"}, nil)
	s := New(Config{Bus: b, Invoker: inv, Logger: quietLogger()})
	id, err := s.Enqueue(context.Background(), Target{Tenant: "default", Function: "gone"}, &runtime.Request{})
	if err != nil {
		t.Fatal(err)
	}
	inv.mu.Lock()
	delete(inv.fns, "gone")
	inv.mu.Unlock()
	s = startService(t, b, inv, nil)
	st := waitState(t, s, id, StateFailed)
	if !strings.Contains(st.Error, "function_not_found") {
		t.Fatalf("status %+v", st)
	}
	if _, err := b.JS.Consumer(context.Background(), bus.StreamAsync, "async_default_gone"); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatal(err)
	}
}

// A 4xx the function wrote is its answer, not a failure: no retry (like Lambda).
func TestClientErrorIsNotRetried(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	fn := inv.add("picky", registry.Config{Runtime: "process"}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		w.WriteHeader(http.StatusUnprocessableEntity)
		return nil
	})
	s := startService(t, b, inv, nil)
	w := postAsync(t, s, inv, "picky", []byte("x"), http.Header{"Authorization": {"Bearer secret"}})
	st := waitState(t, s, w.Header().Get("X-Nimbus-Invocation-Id"), StateSucceeded)
	if st.StatusCode != 422 || st.Attempts != 1 || fn.count() != 1 {
		t.Fatalf("status %+v, calls %d", st, fn.count())
	}
	if got := fn.snapshot()[0].req.Header.Get("Authorization"); got != "Bearer secret" {
		t.Fatalf("the function lost its headers: %q", got)
	}
	if h := redact(http.Header{"Authorization": {"Bearer secret"}, "X-A": {"1"}}); h.Get("Authorization") != "[redacted]" || h.Get("X-A") != "1" {
		t.Fatalf("redact: %v", h)
	}
}

// TestCallbackLoopbackRefused: by default a caller cannot point a result
// callback at the server's own side of the network — a literal loopback or
// metadata address is a 400 at request time, and a name that resolves to one
// (or a redirect to one) is refused when the callback dials.
func TestCallbackLoopbackRefused(t *testing.T) {
	b := openBus(t, t.TempDir())
	inv := newInvoker()
	inv.add("work", registry.Config{Runtime: "process"}, nil)
	s := startService(t, b, inv, nil)
	for _, u := range []string{"http://127.0.0.1:8080/api/v1/functions", "http://localhost/x", "http://[::1]/x",
		"http://169.254.169.254/latest/meta-data", "http://0.0.0.0:9/", "http://api.localhost/"} {
		w := postAsync(t, s, inv, "work", []byte("a"), http.Header{"X-Callback-Url": {u}})
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "loopback") {
			t.Errorf("callback %s: %d %s, want 400 naming loopback", u, w.Code, w.Body)
		}
	}
	hit := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit <- struct{}{} }))
	defer srv.Close()
	// A name that resolves to loopback is refused at dial time.
	byName := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	for _, u := range []string{srv.URL, byName} {
		_, err := newCallbackClient(false).Post(u, "application/json", strings.NewReader("{}"))
		if !errors.Is(err, errCallbackAddr) {
			t.Errorf("POST %s: %v, want errCallbackAddr", u, err)
		}
	}
	if _, err := newCallbackClient(true).Post(srv.URL, "application/json", strings.NewReader("{}")); err != nil {
		t.Fatalf("with CallbackLoopback: %v", err)
	}
	select {
	case <-hit:
	default:
		t.Fatal("the allowed callback did not reach the server")
	}
	select {
	case <-hit:
		t.Fatal("a refused callback reached the server")
	default:
	}
}
