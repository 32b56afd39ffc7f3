package wasm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

var hostGuestMod = &goModule{pkg: "./testdata/hostguest", reactor: true}

// hostEnv is a Host over real services on an embedded JetStream.
func hostEnv(t *testing.T, tenant string, cfg registry.Config, logs *logSink) *hostapi.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := kv.New(kv.Config{Bus: b, Logger: quiet})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop(context.Background()) })
	o := objects.New(objects.Config{Bus: b, Logger: quiet})
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	f := hostapi.New(hostapi.Services{
		KV: k, Objects: o, Logger: quiet,
		Secrets: func(_ context.Context, tenant string, names []string) (map[string]string, error) {
			out := map[string]string{}
			for _, n := range names {
				if n != "TOKEN" {
					return nil, fmt.Errorf("secret %q: %w", n, hostapi.ErrSecretNotFound)
				}
				out[n] = "s3cr3t-of-" + tenant
			}
			return out, nil
		},
		Logs: func(*registry.Version) hostapi.LogSink { return logs },
	})
	return f.For(&registry.Version{Tenant: tenant, Function: "fn", Number: 1, Config: cfg})
}

func TestHostAPIFromWasm(t *testing.T) {
	code := hostGuestMod.get(t)
	var mu sync.Mutex
	var trace string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		trace = r.Header.Get("Traceparent")
		mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Answer", r.Header.Get("X-Guest"))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s:%s", r.Method, b)
	}))
	defer target.Close()
	tu, _ := url.Parse(target.URL)

	logs := &logSink{}
	host := hostEnv(t, "acme", registry.Config{
		Secrets:      []string{"TOKEN"},
		Env:          map[string]string{"GREETING": "hi"},
		AllowedHosts: []string{tu.Host},
	}, logs)
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{Tenant: "acme", Env: map[string]string{"GREETING": "hi"}, Logs: logs, Host: host}, code)
	in := newInstance(t, tpl)

	call := func(method, target string, body string) (int, string) {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		rec := mustInvoke(t, in, request(method, target, b))
		return rec.code, rec.body.String()
	}
	want := func(gotCode int, gotBody string, code int, body string) {
		t.Helper()
		if gotCode != code || (body != "" && gotBody != body) {
			t.Fatalf("got %d %q, want %d %q", gotCode, gotBody, code, body)
		}
	}

	c, b := call("GET", "/kv/get?bucket=todos&key=a", "")
	want(c, b, 404, "")
	c, b = call("POST", "/kv/put?bucket=todos&key=u1/a", `{"title":"one"}`)
	want(c, b, 200, "")
	big := `{"pad":"` + strings.Repeat("x", 5000) + `"}` // larger than the SDK's first buffer
	c, b = call("POST", "/kv/put?bucket=todos&key=u1/b", big)
	want(c, b, 200, "")
	c, b = call("GET", "/kv/get?bucket=todos&key=u1/a", "")
	want(c, b, 200, `{"title":"one"}`)
	c, b = call("GET", "/kv/get?bucket=todos&key=u1/b", "")
	want(c, b, 200, big)
	c, b = call("GET", "/kv/list?bucket=todos&prefix=u1/", "")
	want(c, b, 200, "u1/a,u1/b")
	c, b = call("POST", "/kv/put?bucket=todos&key=bad", "not json")
	want(c, b, 400, "")
	c, b = call("POST", "/kv/delete?bucket=todos&key=u1/a", "")
	want(c, b, 200, "")
	c, b = call("GET", "/kv/get?bucket=todos&key=u1/a", "")
	want(c, b, 404, "")

	c, b = call("POST", "/obj/put?bucket=files&key=a/b.txt", "file body")
	want(c, b, 200, "")
	c, b = call("GET", "/obj/get?bucket=files&key=a/b.txt", "")
	want(c, b, 200, "file body")
	c, b = call("GET", "/obj/list?bucket=files&prefix=a/", "")
	want(c, b, 200, "a/b.txt")
	c, b = call("GET", "/obj/get?bucket=files&key=missing", "")
	want(c, b, 404, "")

	c, b = call("GET", "/secret?name=TOKEN", "")
	want(c, b, 200, "s3cr3t-of-acme")
	c, b = call("GET", "/secret?name=OTHER", "")
	want(c, b, 403, "")
	c, b = call("GET", "/config?name=GREETING", "")
	want(c, b, 200, "hi")
	c, b = call("GET", "/config?name=NOPE", "")
	want(c, b, 404, "")
	c, b = call("POST", "/publish?topic=news", "x")
	want(c, b, 503, "") // no Publish service configured

	// Arguments no SDK would pass get error codes, never a crash:
	// ERR_BOUNDS ×3, ERR_INVALID for an unknown handle and a malformed list.
	c, b = call("GET", "/hostile", "")
	want(c, b, 200, "-2 -2 -2 -1 -1")

	c, b = call("POST", "/log?level=warn", "careful")
	want(c, b, 200, "")
	found := false
	for _, l := range logs.snapshot() {
		if l.stream == hostapi.LogStream && l.id == "inv--log" {
			var m map[string]string
			if err := json.Unmarshal([]byte(l.line), &m); err == nil && m["msg"] == "careful" && m["level"] == "warn" && m["n"] == "7" && m["path"] == "/log" {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("structured log entry missing: %+v", logs.snapshot())
	}

	c, b = call("POST", "/fetch?url="+url.QueryEscape(target.URL+"/x"), "ping")
	want(c, b, 200, "201|yes|POST:ping")
	c, b = call("POST", "/fetch?url="+url.QueryEscape("http://not-allowed.test/"), "")
	want(c, b, 403, "")
	if !logs.has(logLine{"inv--fetch", "stderr", "nimbus host API: http_request: host not-allowed.test is not in allowed_hosts"}) {
		t.Fatalf("denied fetch not explained in the log: %+v", logs.snapshot())
	}
	mu.Lock()
	got := trace
	mu.Unlock()
	if got != "" {
		t.Fatalf("traceparent %q sent without a span in the invocation's context", got)
	}

	// The invocation's span (on the ctx given to Invoke) goes out with fetches.
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	sctx, span := telemetry.NewTracer(telemetry.TracingConfig{}).StartSpan(context.Background(), "invoke", parent)
	sctx, cancel := context.WithTimeout(sctx, 20*time.Second)
	defer cancel()
	rec := newRecorder()
	if err := in.Invoke(sctx, request("POST", "/fetch?url="+url.QueryEscape(target.URL+"/t"), []byte("p")), rec); err != nil || rec.code != 200 {
		t.Fatalf("fetch with a span: %v %d %q", err, rec.code, rec.body.String())
	}
	mu.Lock()
	got = trace
	mu.Unlock()
	if got != span.Traceparent() || !strings.Contains(got, "0af7651916cd43dd8448eb211c80319c") {
		t.Fatalf("traceparent sent %q, want %q", got, span.Traceparent())
	}
}

// A spec without a Host answers every host call with ERR_UNAVAILABLE.
func TestHostAPIUnavailable(t *testing.T) {
	code := hostGuestMod.get(t)
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{}, code)
	in := newInstance(t, tpl)
	for _, target := range []string{"/kv/get?bucket=b&key=k", "/obj/get?bucket=b&key=k", "/secret?name=A", "/config?name=A", "/fetch?url=http://x.test/"} {
		rec := mustInvoke(t, in, request("GET", target, nil))
		if rec.code != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %q, want 503", target, rec.code, rec.body.String())
		}
	}
}
