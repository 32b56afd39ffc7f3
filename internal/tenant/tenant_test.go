package tenant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
)

func openBus(t testing.TB, dir string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startService(t testing.TB, b *bus.Bus, dataDir string, loopback bool) *Service {
	t.Helper()
	s, err := New(Config{Bus: b, DataDir: dataDir, AllowLoopbackAdmin: loopback})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// env is one running tenant service on its own bus, with an admin key.
type env struct {
	t        testing.TB
	dir      string
	b        *bus.Bus
	s        *Service
	adminKey string
	srv      *httptest.Server
}

func newEnv(t testing.TB, loopback bool) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.b = openBus(t, e.dir)
	t.Cleanup(func() { e.b.Close() })
	e.s = startService(t, e.b, e.dir, loopback)
	path, err := e.s.Bootstrap(context.Background(), e.dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.adminKey = strings.TrimSpace(string(raw))
	mux := http.NewServeMux()
	e.s.Routes(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a JSON request with key (none when "") and decodes a JSON answer into out.
func (e *env) do(method, path, key string, in, out any) (int, []byte) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, data
}

func (e *env) mustKey(tenant string, scopes ...string) string {
	e.t.Helper()
	var ck CreatedKey
	code, data := e.do("POST", "/api/v1/keys", e.adminKey, map[string]any{"tenant": tenant, "scopes": scopes}, &ck)
	if code != http.StatusCreated {
		e.t.Fatalf("create key: %d %s", code, data)
	}
	return ck.Key
}

func (e *env) mustTenant(name string) {
	e.t.Helper()
	if code, data := e.do("POST", "/api/v1/tenants", e.adminKey, map[string]any{"name": name}, nil); code != http.StatusCreated {
		e.t.Fatalf("create tenant: %d %s", code, data)
	}
}

func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errCode(data []byte) string {
	var b struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(data, &b)
	return b.Error.Code
}

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.mustTenant("acme")

	full, k, err := e.s.CreateKey(ctx, KeyRequest{Tenant: "acme", Scopes: []string{"invoke", "deploy", "invoke"}, Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(full, "nmb_"+k.ID+"_") || len(full) != keyLen {
		t.Fatalf("key %q does not have the nmb_<id>_<secret> shape", full)
	}
	if got := strings.Join(k.Scopes, ","); got != "deploy,invoke" {
		t.Fatalf("scopes = %s, want deploy,invoke (deduplicated, sorted)", got)
	}
	for range 2 { // the second round takes the verified-cache path
		p, err := e.s.Authenticate(ctx, full)
		if err != nil {
			t.Fatal(err)
		}
		if p.Tenant != "acme" || p.KeyID != k.ID {
			t.Fatalf("principal = %+v", p)
		}
		for scope, want := range map[string]bool{"deploy": true, "invoke": true, "read": true, "admin": false, "bogus": false} {
			if p.Can(scope) != want {
				t.Errorf("Can(%q) = %v, want %v", scope, !want, want)
			}
		}
	}
	// KeyPrincipal is the same check; Authenticate hands out a copy, which
	// may be changed (Middleware sets the tenant an admin acts on).
	kp, err := e.s.KeyPrincipal(ctx, full)
	if err != nil || kp.Tenant != "acme" || kp.KeyID != k.ID || !kp.Can("deploy") || kp.Can("admin") {
		t.Fatalf("KeyPrincipal = %+v, %v", kp, err)
	}
	if p, _ := e.s.Authenticate(ctx, full); p == kp {
		t.Fatal("Authenticate handed out the key's own principal")
	} else {
		p.Tenant = "other"
	}
	if kp, _ := e.s.KeyPrincipal(ctx, full); kp.Tenant != "acme" {
		t.Fatalf("a changed copy leaked into the key's principal: %+v", kp)
	}
	ro, _, _ := e.s.CreateKey(ctx, KeyRequest{Tenant: "acme", Scopes: []string{"read"}})
	p, _ := e.s.Authenticate(ctx, ro)
	if p.Can("deploy") || p.Can("invoke") || !p.Can("read") {
		t.Fatalf("read key scopes wrong: %+v", p)
	}

	if _, err := e.s.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Authenticate(ctx, full); !errors.Is(err, ErrRevokedKey) {
		t.Fatalf("after revoke: %v, want ErrRevokedKey", err)
	}
	if _, err := e.s.KeyPrincipal(ctx, full); !errors.Is(err, ErrRevokedKey) {
		t.Fatalf("KeyPrincipal after revoke: %v, want ErrRevokedKey", err)
	}

	short, _, err := e.s.CreateKey(ctx, KeyRequest{Tenant: "acme", Scopes: []string{"read"}, ExpiresIn: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Authenticate(ctx, short); err != nil {
		t.Fatalf("fresh key refused: %v", err)
	}
	eventually(t, 10*time.Second, func() error {
		if _, err := e.s.Authenticate(ctx, short); !errors.Is(err, ErrExpiredKey) {
			return fmt.Errorf("got %v, want ErrExpiredKey", err)
		}
		return nil
	})

	// Wrong secret for a real id, unknown id, and bad shapes.
	wrong := full[:len(full)-4] + "aaaa"
	if wrong == full {
		wrong = full[:len(full)-4] + "bbbb"
	}
	if _, err := e.s.Authenticate(ctx, wrong); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("wrong secret: %v", err)
	}
	other, _, _ := newKeyString()
	if _, err := e.s.Authenticate(ctx, other); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	for _, bad := range []string{"", "nmb_", "hello", strings.Replace(full, "nmb_", "xyz_", 1), full + "x"} {
		if _, err := e.s.Authenticate(ctx, bad); !errors.Is(err, ErrMalformedKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrMalformedKey", bad, err)
		}
	}

	// Bad requests.
	for _, req := range []KeyRequest{
		{Tenant: "acme"},
		{Tenant: "acme", Scopes: []string{"root"}},
		{Tenant: "acme", Scopes: []string{"read"}, ExpiresIn: -time.Second},
		{Tenant: "nope", Scopes: []string{"read"}},
	} {
		if _, _, err := e.s.CreateKey(ctx, req); err == nil {
			t.Errorf("CreateKey(%+v) succeeded", req)
		}
	}
}

func TestHTTPRefusedKeysAllLookAlike(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	good := e.mustKey("default", "read")
	revoked, rk, _ := e.s.CreateKey(ctx, KeyRequest{Tenant: "default", Scopes: []string{"read"}})
	if _, err := e.s.RevokeKey(ctx, rk.ID); err != nil {
		t.Fatal(err)
	}
	expired, _, _ := e.s.CreateKey(ctx, KeyRequest{Tenant: "default", Scopes: []string{"read"}, ExpiresIn: time.Millisecond})
	eventually(t, 5*time.Second, func() error {
		_, err := e.s.Authenticate(ctx, expired)
		if !errors.Is(err, ErrExpiredKey) {
			return fmt.Errorf("not expired yet: %v", err)
		}
		return nil
	})
	unknown, _, _ := newKeyString()

	if code, data := e.do("GET", "/api/v1/secrets", good, nil, nil); code != 200 {
		t.Fatalf("good key: %d %s", code, data)
	}
	var first []byte
	for name, key := range map[string]string{"missing": "", "malformed": "not-a-key", "unknown": unknown, "revoked": revoked, "expired": expired,
		"wrong secret": good[:len(good)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(good, "a")]} {
		code, data := e.do("GET", "/api/v1/secrets", key, nil, nil)
		if code != http.StatusUnauthorized || errCode(data) != "unauthorized" {
			t.Errorf("%s key: %d %s, want 401 unauthorized", name, code, data)
		}
		if first == nil {
			first = data
		} else if !bytes.Equal(first, data) {
			t.Errorf("%s key: body %s differs from %s: it must not tell why", name, data, first)
		}
	}
	// X-Api-Key works as well as Authorization.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/secrets", nil)
	req.Header.Set("X-Api-Key", good)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("X-Api-Key: %d", resp.StatusCode)
	}
}

func TestKeyShownOnceAndStoredHashed(t *testing.T) {
	e := newEnv(t, false)
	var ck CreatedKey
	code, data := e.do("POST", "/api/v1/keys", e.adminKey, map[string]any{"tenant": "default", "scopes": []string{"deploy"}, "expires_in": "30d", "name": "ci"}, &ck)
	if code != http.StatusCreated {
		t.Fatalf("%d %s", code, data)
	}
	if ck.Expires == nil || ck.Expires.Sub(ck.Created) != 30*24*time.Hour {
		t.Fatalf("expires = %v, created %v", ck.Expires, ck.Created)
	}
	secret := ck.Key[len(keyPrefix)+keyIDLen+1:]
	// The raw store holds the hash, never the key or its secret half.
	kv, err := e.b.JS.KeyValue(context.Background(), bus.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), "k."+ck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(entry.Value(), []byte(secret)) {
		t.Fatalf("stored record contains the key's secret: %s", entry.Value())
	}
	var stored APIKey
	_ = json.Unmarshal(entry.Value(), &stored)
	if len(stored.Hash) != 64 {
		t.Fatalf("stored hash %q is not a hex SHA-256", stored.Hash)
	}
	// Listing shows neither key nor hash.
	code, data = e.do("GET", "/api/v1/keys", e.adminKey, nil, nil)
	if code != 200 || bytes.Contains(data, []byte(secret)) || bytes.Contains(data, []byte(stored.Hash)) || !bytes.Contains(data, []byte(ck.ID)) {
		t.Fatalf("list: %d %s", code, data)
	}
	// The key works over HTTP; a deploy key cannot manage keys (403).
	if code, data := e.do("GET", "/api/v1/keys", ck.Key, nil, nil); code != http.StatusForbidden || errCode(data) != "forbidden" {
		t.Fatalf("deploy key listing keys: %d %s", code, data)
	}
	// Revoke over HTTP: the key stops working at once on this node.
	if code, data := e.do("DELETE", "/api/v1/keys/"+ck.ID, e.adminKey, nil, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, data)
	}
	if code, _ := e.do("GET", "/api/v1/secrets", ck.Key, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("revoked key: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/v1/keys/0123456789abcdef", e.adminKey, nil, nil); code != 404 {
		t.Fatalf("revoke unknown: %d", code)
	}
	for _, body := range []map[string]any{
		{"tenant": "default"},
		{"tenant": "default", "scopes": []string{"everything"}},
		{"tenant": "default", "scopes": []string{"read"}, "expires_in": "soon"},
		{"tenant": "Bad_Name", "scopes": []string{"read"}},
		{"tenant": "default", "scopes": []string{"read"}, "colour": "blue"},
	} {
		if code, data := e.do("POST", "/api/v1/keys", e.adminKey, body, nil); code != 400 {
			t.Errorf("POST /keys %v: %d %s, want 400", body, code, data)
		}
	}
	if code, data := e.do("POST", "/api/v1/keys", e.adminKey, map[string]any{"tenant": "ghost", "scopes": []string{"read"}}, nil); code != 404 {
		t.Errorf("key for a missing tenant: %d %s", code, data)
	}
}

func TestAdminKeyFileAndRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := openBus(t, dir)
	s := startService(t, b, dir, false)
	path, err := s.Bootstrap(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	key := strings.TrimSpace(string(raw))
	p, err := s.Authenticate(ctx, key)
	if err != nil || !p.IsAdmin() || p.Tenant != DefaultTenant {
		t.Fatalf("admin key: %+v %v", p, err)
	}
	if !s.Exists(DefaultTenant) {
		t.Fatal("default tenant missing")
	}
	if st, err := os.Stat(filepath.Join(dir, "secrets.key")); err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Fatalf("secrets.key: %v %v", st, err)
	}
	if _, err := s.Secrets().Set(ctx, DefaultTenant, "TOKEN", "survives-restarts"); err != nil {
		t.Fatal(err)
	}
	// A second Bootstrap in the same life changes nothing.
	if _, err := s.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	_ = s.Stop(ctx)
	b.Close()

	// Restart on the same data dir: same key, still valid, secrets readable.
	b2 := openBus(t, dir)
	defer b2.Close()
	s2 := startService(t, b2, dir, false)
	if _, err := s2.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	raw2, _ := os.ReadFile(path)
	if string(raw2) != string(raw) {
		t.Fatal("admin.key changed across restart")
	}
	if _, err := s2.Authenticate(ctx, key); err != nil {
		t.Fatalf("admin key after restart: %v", err)
	}
	got, err := s2.Secrets().Resolve(ctx, DefaultTenant, []string{"TOKEN"})
	if err != nil || got["TOKEN"] != "survives-restarts" {
		t.Fatalf("secret after restart: %v %v", got, err)
	}
	if n := len(s2.Keys("")); n != 1 {
		t.Fatalf("%d keys after restart, want the one admin key", n)
	}

	// The store lost the key (say, a new bus): Bootstrap registers the file's key again.
	id, _ := parseKeyString(key)
	if err := s2.kv.Purge(ctx, "k."+id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if _, err := s2.Authenticate(ctx, key); err == nil {
			return errors.New("purged key still authenticates")
		}
		return nil
	})
	if _, err := s2.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Authenticate(ctx, key); err != nil {
		t.Fatalf("re-registered admin key: %v", err)
	}

	// A damaged file is reported, not silently replaced.
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Bootstrap(ctx, dir); err == nil || !strings.Contains(err.Error(), "admin.key") {
		t.Fatalf("damaged admin.key: %v", err)
	}
}

func TestRevocationReachesOtherNodes(t *testing.T) {
	// Two services on one bus stand for two nodes: the second learns of keys
	// and revocations only through the KV watch.
	dir := t.TempDir()
	ctx := context.Background()
	b := openBus(t, dir)
	defer b.Close()
	a := startService(t, b, dir, false)
	if _, err := a.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	other := startService(t, b, dir, false)
	full, k, err := a.CreateKey(ctx, KeyRequest{Tenant: DefaultTenant, Scopes: []string{"invoke"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error { _, err := other.Authenticate(ctx, full); return err })
	if _, err := a.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if _, err := other.Authenticate(ctx, full); !errors.Is(err, ErrRevokedKey) {
			return fmt.Errorf("other node: %v", err)
		}
		return nil
	})
	if _, err := a.CreateTenant(ctx, "beta", Quotas{MaxFunctions: 3}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if other.Quotas("beta").MaxFunctions != 3 {
			return errors.New("tenant not seen by the other node")
		}
		return nil
	})
}

func TestTenantsAPI(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	code, data := e.do("POST", "/api/v1/tenants", e.adminKey, map[string]any{"name": "acme", "quotas": map[string]any{"max_concurrency": 10, "max_rps": 5.5}}, nil)
	if code != 201 {
		t.Fatalf("%d %s", code, data)
	}
	if q := e.s.Quotas("acme"); q.MaxConcurrency != 10 || q.MaxRPS != 5.5 {
		t.Fatalf("quotas %+v", q)
	}
	if code, data := e.do("POST", "/api/v1/tenants", e.adminKey, map[string]any{"name": "acme"}, nil); code != 409 || errCode(data) != "conflict" {
		t.Fatalf("duplicate: %d %s", code, data)
	}
	if code, data := e.do("POST", "/api/v1/tenants", e.adminKey, map[string]any{"name": "Not OK"}, nil); code != 400 || errCode(data) != "invalid_name" {
		t.Fatalf("bad name: %d %s", code, data)
	}
	if code, _ := e.do("PUT", "/api/v1/tenants/acme/quotas", e.adminKey, map[string]any{"max_functions": -1}, nil); code != 400 {
		t.Fatalf("negative quota: %d", code)
	}
	var tn Tenant
	if code, data := e.do("PUT", "/api/v1/tenants/acme/quotas", e.adminKey, map[string]any{"max_functions": 7}, &tn); code != 200 || tn.Quotas.MaxFunctions != 7 {
		t.Fatalf("set quotas: %d %s", code, data)
	}
	var list struct{ Tenants []Tenant }
	e.do("GET", "/api/v1/tenants", e.adminKey, nil, &list)
	if len(list.Tenants) != 2 || list.Tenants[0].Name != "acme" || list.Tenants[1].Name != "default" {
		t.Fatalf("list %+v", list)
	}
	acmeKey := e.mustKey("acme", "deploy")
	if _, err := e.s.Secrets().Set(ctx, "acme", "DB", "pw-of-acme"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.do("DELETE", "/api/v1/tenants/default", e.adminKey, nil, nil); code != 400 {
		t.Fatalf("delete default: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/v1/tenants/acme", acmeKey, nil, nil); code != 403 {
		t.Fatalf("non-admin delete: %d", code)
	}
	if code, data := e.do("DELETE", "/api/v1/tenants/acme", e.adminKey, nil, nil); code != 204 {
		t.Fatalf("delete: %d %s", code, data)
	}
	if code, _ := e.do("DELETE", "/api/v1/tenants/acme", e.adminKey, nil, nil); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	if code, _ := e.do("GET", "/api/v1/secrets", acmeKey, nil, nil); code != 401 {
		t.Fatalf("key of a deleted tenant: %d", code)
	}
	kv, _ := e.b.JS.KeyValue(ctx, bus.BucketTenants)
	if _, err := kv.Get(ctx, "s.acme.DB"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("secret of deleted tenant still stored: %v", err)
	}
	// Re-creating the name starts clean.
	e.mustTenant("acme")
	if got, _ := e.s.Secrets().List(ctx, "acme"); len(got) != 0 {
		t.Fatalf("re-created tenant inherited secrets: %v", got)
	}
}

func TestCrossTenantIsNotFound(t *testing.T) {
	e := newEnv(t, false)
	e.mustTenant("alpha")
	e.mustTenant("beta")
	ka := e.mustKey("alpha", "deploy")
	kb := e.mustKey("beta", "deploy")
	if code, _ := e.do("PUT", "/api/v1/secrets/SHARED", kb, map[string]any{"value": "beta-secret-value"}, nil); code != 200 {
		t.Fatal(code)
	}
	// Naming another tenant: 404, and the same 404 as a tenant that does not exist.
	_, real := e.do("GET", "/api/v1/secrets?tenant=beta", ka, nil, nil)
	code, ghost := e.do("GET", "/api/v1/secrets?tenant=gamma", ka, nil, nil)
	if code != 404 || errCode(real) != "not_found" {
		t.Fatalf("cross-tenant: %s", real)
	}
	if strings.ReplaceAll(string(real), "beta", "X") != strings.ReplaceAll(string(ghost), "gamma", "X") {
		t.Fatalf("existing and missing tenants answer differently: %s vs %s", real, ghost)
	}
	req, _ := http.NewRequest("DELETE", e.srv.URL+"/api/v1/secrets/SHARED", nil)
	req.Header.Set("Authorization", "Bearer "+ka)
	req.Header.Set(TenantHeader, "beta")
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("cross-tenant delete via header: %d", resp.StatusCode)
	}
	if code, _ := e.do("GET", "/api/v1/tenants/beta", ka, nil, nil); code != 404 {
		t.Fatalf("GET other tenant: %d", code)
	}
	if code, _ := e.do("GET", "/api/v1/tenants/alpha", ka, nil, nil); code != 200 {
		t.Fatalf("GET own tenant: %d", code)
	}
	// Alpha's own view has nothing of beta's.
	_, data := e.do("GET", "/api/v1/secrets", ka, nil, nil)
	if bytes.Contains(data, []byte("SHARED")) {
		t.Fatalf("alpha sees beta's secret names: %s", data)
	}
	if code, _ := e.do("DELETE", "/api/v1/secrets/SHARED", ka, nil, nil); code != 404 {
		t.Fatalf("alpha deleting a name only beta has: %d", code)
	}
	// The admin may act on beta.
	var list struct{ Secrets []SecretInfo }
	if code, _ := e.do("GET", "/api/v1/secrets?tenant=beta", e.adminKey, nil, &list); code != 200 || len(list.Secrets) != 1 {
		t.Fatalf("admin on beta: %d %+v", code, list)
	}
	if code, _ := e.do("GET", "/api/v1/secrets?tenant=gamma", e.adminKey, nil, nil); code != 404 {
		t.Fatalf("admin on missing tenant: %d", code)
	}
	var keys struct{ Keys []APIKey }
	e.do("GET", "/api/v1/keys?tenant=beta", e.adminKey, nil, &keys)
	if len(keys.Keys) != 1 || keys.Keys[0].Tenant != "beta" {
		t.Fatalf("admin keys of beta: %+v", keys)
	}
}

func TestLoopbackAdmin(t *testing.T) {
	on := newEnv(t, true)
	if code, data := on.do("GET", "/api/v1/tenants", "", nil, nil); code != 200 {
		t.Fatalf("loopback without key: %d %s", code, data)
	}
	// A key that is present is still checked.
	if code, _ := on.do("GET", "/api/v1/tenants", "nmb_bogus", nil, nil); code != 401 {
		t.Fatalf("loopback with a bad key: %d", code)
	}
	off := newEnv(t, false)
	if code, _ := off.do("GET", "/api/v1/tenants", "", nil, nil); code != 401 {
		t.Fatalf("loopback admin off: %d", code)
	}
	if !isLoopback("[::1]:5000") || !isLoopback("127.0.0.1:1") || isLoopback("10.0.0.1:80") || isLoopback("garbage") {
		t.Fatal("isLoopback")
	}
}

func TestScopesOverHTTP(t *testing.T) {
	e := newEnv(t, false)
	inv := e.mustKey("default", "invoke")
	rd := e.mustKey("default", "read")
	if code, data := e.do("PUT", "/api/v1/secrets/X_1", inv, map[string]any{"value": "v"}, nil); code != 403 || errCode(data) != "forbidden" {
		t.Fatalf("invoke key setting a secret: %d %s", code, data)
	}
	if code, _ := e.do("GET", "/api/v1/secrets", inv, nil, nil); code != 403 {
		t.Fatalf("invoke key listing: %d", code)
	}
	if code, _ := e.do("GET", "/api/v1/secrets", rd, nil, nil); code != 200 {
		t.Fatalf("read key listing: %d", code)
	}
	if code, _ := e.do("POST", "/api/v1/tenants", rd, map[string]any{"name": "x"}, nil); code != 403 {
		t.Fatalf("read key creating a tenant: %d", code)
	}
	// Anonymous middleware: no key passes without a principal; a bad key is 401.
	h := e.s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if FromContext(r.Context()) == nil {
			w.WriteHeader(299)
		}
	}), MiddlewareOptions{Anonymous: true})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 299 {
		t.Fatalf("anonymous: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer nope")
	h.ServeHTTP(rec, r)
	if rec.Code != 401 {
		t.Fatalf("anonymous with a bad key: %d", rec.Code)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	e := newEnv(b, false)
	ctx := context.Background()
	key := e.adminKey
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.s.Authenticate(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hash", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.s.verified.Clear()
			if _, err := e.s.Authenticate(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestBeforeDeleteTenantCanRefuse(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := openBus(t, dir)
	defer b.Close()
	var asked []string
	s, err := New(Config{Bus: b, DataDir: dir, BeforeDeleteTenant: func(ctx context.Context, name string) error {
		asked = append(asked, name)
		if name == "busy" {
			return apierr.New(apierr.Conflict, "tenant %q still has 2 functions: delete them first", name)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	if _, err := s.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"busy", "idle"} {
		if _, err := s.CreateTenant(ctx, n, Quotas{}); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, AdminKeyFile))
	e := &env{t: t, s: s, srv: srv, adminKey: strings.TrimSpace(string(raw))}
	if code, data := e.do("DELETE", "/api/v1/tenants/busy", e.adminKey, nil, nil); code != 409 || !strings.Contains(string(data), "2 functions") {
		t.Fatalf("refused delete: %d %s", code, data)
	}
	if !s.Exists("busy") {
		t.Fatal("refused delete removed the tenant")
	}
	if code, _ := e.do("DELETE", "/api/v1/tenants/idle", e.adminKey, nil, nil); code != 204 {
		t.Fatalf("delete idle: %d", code)
	}
	if strings.Join(asked, ",") != "busy,idle" {
		t.Fatalf("hook asked about %v", asked)
	}
}
