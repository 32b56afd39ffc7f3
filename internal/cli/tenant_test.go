package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// tenantServer runs the real tenant service (embedded JetStream in a temp
// dir) behind a real HTTP server and returns its URL, the admin key and the service.
func tenantServer(t *testing.T) (string, string, *tenant.Service) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := tenant.New(tenant.Config{Bus: b, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	path, err := s.Bootstrap(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, strings.TrimSpace(string(raw)), s
}

// run runs the CLI and returns exit code, stdout and stderr.
func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestTenantKeySecretCommands(t *testing.T) {
	url, admin, svc := tenantServer(t)
	base := []string{"--server", url, "--key", admin}
	cli := func(stdin string, args ...string) (int, string, string) {
		return runCLI(t, stdin, append(append([]string{}, base...), args...)...)
	}

	if code, out, errs := cli("", "tenant", "create", "acme", "--max-concurrency", "5", "--max-functions", "3"); code != 0 || !strings.Contains(out, "created tenant acme") {
		t.Fatalf("tenant create: %d %s %s", code, out, errs)
	}
	if q := svc.Quotas("acme"); q.MaxConcurrency != 5 || q.MaxFunctions != 3 {
		t.Fatalf("quotas %+v", q)
	}
	if code, _, errs := cli("", "tenant", "create", "acme"); code == 0 || !strings.Contains(errs, "409") {
		t.Fatalf("duplicate tenant: %d %s", code, errs)
	}
	if code, out, _ := cli("", "tenant", "quotas", "acme", "--max-rps", "7.5"); code != 0 || !strings.Contains(out, "rps=7.5") {
		t.Fatalf("tenant quotas: %d %s", code, out)
	}
	code, out, _ := cli("", "tenant", "ls")
	if code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "default") {
		t.Fatalf("tenant ls: %d %s", code, out)
	}
	code, out, _ = cli("", "tenant", "ls", "-o", "json")
	var tl struct{ Tenants []TenantView }
	if code != 0 || json.Unmarshal([]byte(out), &tl) != nil || len(tl.Tenants) != 2 {
		t.Fatalf("tenant ls -o json: %d %s", code, out)
	}

	// key create prints the key alone on stdout, the rest on stderr.
	code, out, errs := cli("", "key", "create", "--tenant", "acme", "--scopes", "deploy,read", "--expires", "30d", "--name", "ci")
	if code != 0 || !strings.Contains(errs, "only time") {
		t.Fatalf("key create: %d %s %s", code, out, errs)
	}
	acmeKey := strings.TrimSpace(out)
	p, err := svc.Authenticate(context.Background(), acmeKey)
	if err != nil || p.Tenant != "acme" || !p.Can("deploy") {
		t.Fatalf("created key: %+v %v", p, err)
	}
	code, out, _ = cli("", "key", "create", "--tenant", "acme", "--scopes", "invoke", "-o", "json")
	var kv KeyView
	if code != 0 || json.Unmarshal([]byte(out), &kv) != nil || kv.Key == "" || kv.ID == "" {
		t.Fatalf("key create -o json: %d %s", code, out)
	}
	if code, _, errs := cli("", "key", "create", "--tenant", "acme"); code == 0 || !strings.Contains(errs, "--scopes") {
		t.Fatalf("key create without scopes: %d %s", code, errs)
	}
	code, out, _ = cli("", "key", "ls", "--tenant", "acme")
	if code != 0 || !strings.Contains(out, kv.ID) || strings.Contains(out, kv.Key) || strings.Count(out, "\n") != 3 {
		t.Fatalf("key ls: %d %s", code, out)
	}
	if code, out, _ := cli("", "key", "revoke", kv.ID); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("key revoke: %d %s", code, out)
	}
	if _, out, _ := cli("", "key", "ls", "--tenant", "acme"); !strings.Contains(out, "revoked") {
		t.Fatalf("key ls after revoke: %s", out)
	}

	// Secrets as the acme deploy key: argument, file, stdin.
	asAcme := func(stdin string, args ...string) (int, string, string) {
		return runCLI(t, stdin, append([]string{"--server", url, "--key", acmeKey}, args...)...)
	}
	if code, out, errs := asAcme("", "secret", "set", "API_TOKEN", "tok-123456"); code != 0 {
		t.Fatalf("secret set: %d %s %s", code, out, errs)
	}
	f := filepath.Join(t.TempDir(), "pem")
	_ = os.WriteFile(f, []byte("-----BEGIN KEY-----\nabc\n"), 0o600)
	if code, _, errs := asAcme("", "secret", "set", "TLS_KEY", "--from-file", f); code != 0 {
		t.Fatalf("secret set --from-file: %s", errs)
	}
	if code, _, errs := asAcme("from-stdin\n", "secret", "set", "DB_PASSWORD", "-"); code != 0 {
		t.Fatalf("secret set -: %s", errs)
	}
	got, err := svc.Secrets().Resolve(context.Background(), "acme", []string{"API_TOKEN", "TLS_KEY", "DB_PASSWORD"})
	if err != nil || got["API_TOKEN"] != "tok-123456" || got["TLS_KEY"] != "-----BEGIN KEY-----\nabc\n" || got["DB_PASSWORD"] != "from-stdin" {
		t.Fatalf("stored secrets %q %v", got, err)
	}
	code, out, _ = asAcme("", "secret", "ls")
	if code != 0 || !strings.Contains(out, "API_TOKEN") || strings.Contains(out, "tok-123456") || strings.Contains(out, "from-stdin") {
		t.Fatalf("secret ls: %d %s", code, out)
	}
	if code, _, errs := asAcme("", "secret", "set", "BAD-NAME", "x"); code == 0 || !strings.Contains(errs, "invalid_name") {
		t.Fatalf("bad secret name: %d %s", code, errs)
	}
	if code, _, errs := asAcme("", "secret", "ls", "--tenant", "default"); code == 0 || !strings.Contains(errs, "404") {
		t.Fatalf("acme key on default's secrets: %d %s", code, errs)
	}
	// The admin can act on acme with --tenant.
	if code, out, _ := cli("", "secret", "ls", "--tenant", "acme", "-o", "json"); code != 0 || !strings.Contains(out, "TLS_KEY") {
		t.Fatalf("admin secret ls --tenant: %d %s", code, out)
	}
	if code, out, _ := asAcme("", "secret", "rm", "API_TOKEN"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("secret rm: %d %s", code, out)
	}
	if code, _, _ := asAcme("", "secret", "rm", "API_TOKEN"); code == 0 {
		t.Fatal("secret rm twice succeeded")
	}

	if code, out, _ := cli("", "tenant", "rm", "acme"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("tenant rm: %d %s", code, out)
	}
	if code, _, errs := asAcme("", "secret", "ls"); code == 0 || !strings.Contains(errs, "401") {
		t.Fatalf("key of a deleted tenant: %d %s", code, errs)
	}
}
