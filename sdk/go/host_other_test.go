//go:build !wasip1

package nimbus

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The process path: requests carry the token and the invocation's id and
// traceparent, and the endpoint's error codes map onto the SDK's errors.
func TestHostEndpointClient(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.RequestURI()] = r.Header.Clone()
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		switch {
		case r.URL.Path == "/v1/kv/b/a b/c":
			io.WriteString(w, `{"ok":true}`)
		case r.URL.Path == "/v1/kv/b":
			io.WriteString(w, `{"keys":["x","y"]}`)
		case strings.HasPrefix(r.URL.Path, "/v1/secrets/"):
			w.WriteHeader(403)
			io.WriteString(w, `{"error":{"code":"forbidden","message":"secret_get: secret \"S\" is not named in the function's config.secrets"}}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"no such key"}}`)
		}
	}))
	defer srv.Close()
	t.Setenv("NIMBUS_HOST_API", srv.URL)
	t.Setenv("NIMBUS_HOST_TOKEN", "tok")

	var ctx context.Context
	in := httptest.NewRequest("GET", "/", nil)
	in.Header.Set(InvocationIDHeader, "inv-7")
	in.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	withCallInfo(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ctx = r.Context() })).ServeHTTP(nil, in)

	v, err := KV("b").Get(ctx, "a b/c")
	if err != nil || string(v) != `{"ok":true}` {
		t.Fatalf("get: %q %v", v, err)
	}
	h := seen["GET /v1/kv/b/a%20b/c"]
	if h.Get(InvocationIDHeader) != "inv-7" || !strings.HasPrefix(h.Get("Traceparent"), "00-0af7") {
		t.Fatalf("call info not passed on: %v", h)
	}
	if keys, err := KV("b").List(ctx, ""); err != nil || strings.Join(keys, ",") != "x,y" {
		t.Fatalf("list: %v %v", keys, err)
	}
	if _, err := KV("b").Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := Secret("S"); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "config.secrets") {
		t.Fatalf("secret: %v", err)
	}
	t.Setenv("NIMBUS_HOST_API", "")
	if _, err := Secret("S"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("outside Nimbus: %v", err)
	}
}
