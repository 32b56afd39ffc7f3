package hostapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

type sink struct {
	mu    sync.Mutex
	lines []string
}

func (s *sink) Log(id, stream string, line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, id+"|"+stream+"|"+string(line))
}

func (s *sink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

type env struct {
	bus     *bus.Bus
	f       *hostapi.Factory
	kv      *kv.Service
	obj     *objects.Service
	logs    *sink
	secrets map[string]map[string]string // tenant → name → value
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T) *env { return newEnvB(t) }

func newEnvB(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	k := kv.New(kv.Config{Bus: b, Logger: quiet()})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop(context.Background()) })
	o := objects.New(objects.Config{Bus: b, Logger: quiet()})
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{bus: b, kv: k, obj: o, logs: &sink{}, secrets: map[string]map[string]string{
		"alpha": {"API_KEY": "alpha-key", "OTHER": "alpha-other"},
		"beta":  {"API_KEY": "beta-key"},
	}}
	e.f = hostapi.New(hostapi.Services{
		KV: k, Objects: o, Logger: quiet(),
		Secrets: func(_ context.Context, tenant string, names []string) (map[string]string, error) {
			out := map[string]string{}
			for _, n := range names {
				v, ok := e.secrets[tenant][n]
				if !ok {
					return nil, fmt.Errorf("secret %q of tenant %q: %w", n, tenant, hostapi.ErrSecretNotFound)
				}
				out[n] = v
			}
			return out, nil
		},
		Logs: func(*registry.Version) hostapi.LogSink { return e.logs },
	})
	return e
}

func version(tenant string, cfg registry.Config) *registry.Version {
	return &registry.Version{Tenant: tenant, Function: "fn", Number: 1, Config: cfg}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestKVAndObjectsRoundTrip(t *testing.T) {
	e := newEnv(t)
	h := e.f.For(version("alpha", registry.Config{}))
	c := ctx(t)
	if _, err := h.KVGet(c, "todos", "a"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("get from a missing bucket: %v, want not found", err)
	}
	if _, err := h.KVPut(c, "todos", "u1/a", []byte(`{"title":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.KVPut(c, "todos", "u1/b", []byte(`{"title":"y"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.KVPut(c, "todos", "u2/a", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.KVPut(c, "todos", "u1/c", []byte(`not json`)); hostapi.KindOf(err) != hostapi.BadInput {
		t.Fatalf("put of a non-JSON value: %v, want bad input", err)
	}
	v, err := h.KVGet(c, "todos", "u1/a")
	if err != nil || string(v) != `{"title":"x"}` {
		t.Fatalf("get: %q, %v", v, err)
	}
	keys, err := h.KVList(c, "todos", "u1/")
	if err != nil || !slices.Equal(keys, []string{"u1/a", "u1/b"}) {
		t.Fatalf("list: %v, %v", keys, err)
	}
	if err := h.KVDelete(c, "todos", "u1/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.KVGet(c, "todos", "u1/a"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := h.KVPut(c, "Bad_Bucket", "k", []byte(`1`)); hostapi.KindOf(err) != hostapi.BadInput {
		t.Fatalf("bad bucket name: %v, want bad input", err)
	}

	if err := h.ObjectPut(c, "files", "dir/a.txt", []byte("hello"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	o, err := h.ObjectGet(c, "files", "dir/a.txt")
	if err != nil || string(o.Data) != "hello" || o.ContentType != "text/plain" {
		t.Fatalf("object get: %+v, %v", o, err)
	}
	if keys, err := h.ObjectList(c, "files", "dir/"); err != nil || !slices.Equal(keys, []string{"dir/a.txt"}) {
		t.Fatalf("object list: %v, %v", keys, err)
	}
	if err := h.ObjectDelete(c, "files", "dir/a.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ObjectGet(c, "files", "dir/a.txt"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("object get after delete: %v", err)
	}
}

// A version of tenant alpha that names beta's bucket reaches its own
// (missing) bucket of that name, never beta's.
func TestTenantConfinement(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	beta := e.f.For(version("beta", registry.Config{}))
	if _, err := beta.KVPut(c, "shared", "secret-doc", []byte(`{"owner":"beta"}`)); err != nil {
		t.Fatal(err)
	}
	if err := beta.ObjectPut(c, "shared", "file", []byte("beta's"), ""); err != nil {
		t.Fatal(err)
	}
	alpha := e.f.For(version("alpha", registry.Config{}))
	if v, err := alpha.KVGet(c, "shared", "secret-doc"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("alpha read beta's key: %q, %v", v, err)
	}
	if keys, err := alpha.KVList(c, "shared", ""); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("alpha listed beta's bucket: %v, %v", keys, err)
	}
	if o, err := alpha.ObjectGet(c, "shared", "file"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("alpha read beta's object: %q, %v", o.Data, err)
	}
	// alpha writing to "shared" makes its own bucket; beta's is untouched.
	if _, err := alpha.KVPut(c, "shared", "secret-doc", []byte(`{"owner":"alpha"}`)); err != nil {
		t.Fatal(err)
	}
	if v, err := beta.KVGet(c, "shared", "secret-doc"); err != nil || string(v) != `{"owner":"beta"}` {
		t.Fatalf("beta's value after alpha's write: %q, %v", v, err)
	}
}

func TestSecretsOnlyThoseNamed(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	h := e.f.For(version("alpha", registry.Config{Secrets: []string{"API_KEY", "MISSING"}, Env: map[string]string{"MODE": "test"}}))
	if v, err := h.Secret(c, "API_KEY"); err != nil || v != "alpha-key" {
		t.Fatalf("named secret: %q, %v", v, err)
	}
	if _, err := h.Secret(c, "OTHER"); hostapi.KindOf(err) != hostapi.Denied || !strings.Contains(err.Error(), "config.secrets") {
		t.Fatalf("unnamed secret: %v, want denied", err)
	}
	if _, err := h.Secret(c, "MISSING"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("named but missing secret: %v, want not found", err)
	}
	if v, err := h.Config("MODE"); err != nil || v != "test" {
		t.Fatalf("config: %q, %v", v, err)
	}
	if _, err := h.Config("NOPE"); hostapi.KindOf(err) != hostapi.NotFound {
		t.Fatalf("missing config: %v", err)
	}
}

func TestUnavailableServices(t *testing.T) {
	h := hostapi.New(hostapi.Services{}).For(version("alpha", registry.Config{Secrets: []string{"A"}}))
	c := ctx(t)
	for name, err := range map[string]error{
		"kv":      func() error { _, err := h.KVGet(c, "b", "k"); return err }(),
		"objects": func() error { _, err := h.ObjectGet(c, "b", "k"); return err }(),
		"publish": h.Publish(c, "topic", nil, ""),
		"secret":  func() error { _, err := h.Secret(c, "A"); return err }(),
		"log":     h.Log("", "info", "m", nil),
	} {
		if hostapi.KindOf(err) != hostapi.Unavailable {
			t.Errorf("%s: %v, want unavailable", name, err)
		}
	}
}

func TestLogStructured(t *testing.T) {
	e := newEnv(t)
	h := e.f.For(version("alpha", registry.Config{}))
	if err := h.Log("inv-1", "warn", "disk low", map[string]string{"free": "10"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Log("inv-1", "loud", "x", nil); hostapi.KindOf(err) != hostapi.BadInput {
		t.Fatalf("bad level: %v", err)
	}
	lines := e.logs.all()
	if len(lines) != 1 {
		t.Fatalf("lines: %q", lines)
	}
	id, rest, _ := strings.Cut(lines[0], "|")
	stream, line, _ := strings.Cut(rest, "|")
	var m map[string]string
	if id != "inv-1" || stream != hostapi.LogStream || json.Unmarshal([]byte(line), &m) != nil ||
		m["level"] != "warn" || m["msg"] != "disk low" || m["free"] != "10" || m["time"] == "" {
		t.Fatalf("log line: %q", lines[0])
	}
}

func TestFetchAllowedHosts(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	var mu sync.Mutex
	var gotTrace string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotTrace = r.Header.Get("Traceparent")
		mu.Unlock()
		w.Header().Set("X-Answer", "42")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, r.Header.Get("X-In"))
	}))
	defer target.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "other host reached")
	}))
	defer other.Close()
	// redirector sends to the other server (another host: its own port).
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			http.Redirect(w, r, "/final", http.StatusFound)
			return
		}
		if r.URL.Path == "/final" {
			_, _ = io.WriteString(w, "same host ok")
			return
		}
		http.Redirect(w, r, other.URL+"/x", http.StatusFound)
	}))
	defer redirector.Close()
	tu, _ := url.Parse(target.URL)
	ru, _ := url.Parse(redirector.URL)
	ou, _ := url.Parse(other.URL)

	h := e.f.For(version("alpha", registry.Config{AllowedHosts: []string{tu.Host, ru.Host, ou.Host, "*.example.test"}}))
	resp, err := h.Fetch(c, hostapi.FetchRequest{Method: "POST", URL: target.URL + "/p", Header: http.Header{"X-In": {"v"}}, Body: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusTeapot || string(resp.Body) != "POST /p v" || resp.Header.Get("X-Answer") != "42" {
		t.Fatalf("response: %d %q %v", resp.Status, resp.Body, resp.Header)
	}

	// Redirects within a host are followed; to another host refused, even
	// when that host is allowed.
	if resp, err := h.Fetch(c, hostapi.FetchRequest{URL: redirector.URL + "/same"}); err != nil || string(resp.Body) != "same host ok" {
		t.Fatalf("same-host redirect: %v, %v", resp, err)
	}
	if resp, err := h.Fetch(c, hostapi.FetchRequest{URL: redirector.URL + "/elsewhere"}); hostapi.KindOf(err) != hostapi.Denied {
		t.Fatalf("cross-host redirect: %v, %v, want denied", resp, err)
	}

	// A version that lists only the target is refused the others.
	narrow := e.f.For(version("alpha", registry.Config{AllowedHosts: []string{tu.Host}}))
	_, err = narrow.Fetch(c, hostapi.FetchRequest{URL: other.URL})
	if hostapi.KindOf(err) != hostapi.Denied || !strings.Contains(err.Error(), "host "+ou.Host+" is not in allowed_hosts") {
		t.Fatalf("unlisted host: %v", err)
	}
	// Hostname-only entries allow any port; none at all allows nothing.
	byName := e.f.For(version("alpha", registry.Config{AllowedHosts: []string{"127.0.0.1"}}))
	if _, err := byName.Fetch(c, hostapi.FetchRequest{URL: other.URL}); err != nil {
		t.Fatalf("host without port: %v", err)
	}
	none := e.f.For(version("alpha", registry.Config{}))
	if _, err := none.Fetch(c, hostapi.FetchRequest{URL: target.URL}); hostapi.KindOf(err) != hostapi.Denied {
		t.Fatalf("no allowed_hosts: %v", err)
	}
	for _, bad := range []string{"ftp://" + tu.Host + "/", "http:///x", "::bad"} {
		if _, err := h.Fetch(c, hostapi.FetchRequest{URL: bad}); hostapi.KindOf(err) != hostapi.BadInput {
			t.Errorf("url %q: %v, want bad input", bad, err)
		}
	}

	// Traceparent from the invocation's span goes out with the request.
	tracer := telemetry.NewTracer(telemetry.TracingConfig{})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sctx, span := tracer.StartSpan(c, "invoke", parent)
	defer span.End(telemetry.StatusOK)
	if _, err := h.Fetch(sctx, hostapi.FetchRequest{URL: target.URL}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	tr := gotTrace
	mu.Unlock()
	if tr != span.Traceparent() || !strings.HasPrefix(tr, "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent sent %q, want %q", tr, span.Traceparent())
	}
	// Without a span, one passed with WithTraceparent (process endpoint).
	if _, err := h.Fetch(hostapi.WithTraceparent(c, parent), hostapi.FetchRequest{URL: target.URL}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	tr = gotTrace
	mu.Unlock()
	if tr != parent {
		t.Fatalf("traceparent sent %q, want %q", tr, parent)
	}
}

func TestWildcardHosts(t *testing.T) {
	// Wildcards are checked before any connection is made, so unroutable
	// names show the matching without a network.
	e := newEnv(t)
	h := e.f.For(version("alpha", registry.Config{AllowedHosts: []string{"*.example.test", "api.other.test:8443"}}))
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for u, allowed := range map[string]bool{
		"http://a.example.test/":           true,
		"http://deep.a.example.test/":      true,
		"http://example.test/":             false,
		"http://evil-example.test/":        false,
		"http://a.example.test.evil/":      false,
		"https://api.other.test:8443/":     true,
		"https://api.other.test/":          false,
		"http://api.other.test:8443.x/":    false,
		"http://A.EXAMPLE.TEST/uppercase":  true,
		"http://user@a.example.test/creds": false,
	} {
		_, err := h.Fetch(c, hostapi.FetchRequest{URL: u})
		denied := hostapi.KindOf(err) == hostapi.Denied || hostapi.KindOf(err) == hostapi.BadInput
		if denied == allowed {
			t.Errorf("%s: allowed=%v, got %v", u, allowed, err)
		}
	}
}

func TestEndpoint(t *testing.T) {
	e := newEnv(t)
	h := e.f.For(version("alpha", registry.Config{Secrets: []string{"API_KEY"}}))
	ep, err := hostapi.Listen(h)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	do := func(method, path, token string, body []byte) (int, string) {
		req, _ := http.NewRequest(method, ep.URL+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/v1/secrets/API_KEY", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := do("GET", "/v1/secrets/API_KEY", "wrong", nil); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if code, b := do("PUT", "/v1/kv/data/k1", ep.Token, []byte(`{"n":1}`)); code != http.StatusNoContent {
		t.Fatalf("kv put: %d %s", code, b)
	}
	if code, b := do("GET", "/v1/kv/data/k1", ep.Token, nil); code != 200 || b != `{"n":1}` {
		t.Fatalf("kv get: %d %s", code, b)
	}
	if code, b := do("GET", "/v1/kv/data", ep.Token, nil); code != 200 || !strings.Contains(b, `"k1"`) {
		t.Fatalf("kv list: %d %s", code, b)
	}
	if code, b := do("GET", "/v1/secrets/API_KEY", ep.Token, nil); code != 200 || b != "alpha-key" {
		t.Fatalf("secret: %d %s", code, b)
	}
	if code, b := do("GET", "/v1/secrets/OTHER", ep.Token, nil); code != http.StatusForbidden || !strings.Contains(b, `"forbidden"`) {
		t.Fatalf("unnamed secret: %d %s", code, b)
	}
	if code, b := do("GET", "/v1/kv/data/missing", ep.Token, nil); code != http.StatusNotFound {
		t.Fatalf("missing key: %d %s", code, b)
	}
	fr, _ := json.Marshal(hostapi.FetchRequest{URL: "http://nowhere.test/"})
	if code, b := do("POST", "/v1/fetch", ep.Token, fr); code != http.StatusForbidden || !strings.Contains(b, "not in allowed_hosts") {
		t.Fatalf("fetch denied: %d %s", code, b)
	}
	if err := ep.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
	if _, err := http.Get(ep.URL + "/v1/kv/data/k1"); err == nil {
		t.Fatal("endpoint still answers after Close")
	}
}
