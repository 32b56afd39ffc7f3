package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/nimbusfn/nimbus/internal/baas/auth"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

func TestUsersCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ts, _ := tenant.New(tenant.Config{Bus: b, DataDir: dir})
	if err := ts.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Stop(context.Background()) })
	path, err := ts.Bootstrap(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	admin := strings.TrimSpace(string(raw))
	as, _ := auth.New(auth.Config{Bus: b, Tenants: ts, Argon2: auth.Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}})
	if err := as.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = as.Stop(context.Background()) })
	mux := http.NewServeMux()
	as.Routes(mux)
	as.AdminRoutes(mux, ts)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	resp, err := http.Post(srv.URL+"/auth/default/signup", "application/json", bytes.NewReader([]byte(`{"email":"ada@example.com","password":"correct horse"}`)))
	if err != nil {
		t.Fatal(err)
	}
	var tk auth.Tokens
	_ = json.NewDecoder(resp.Body).Decode(&tk)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("signup: %d", resp.StatusCode)
	}
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, "", append([]string{"--server", srv.URL, "--key", admin}, args...)...)
	}
	if code, out, errs := cli("users", "ls"); code != 0 || !strings.Contains(out, "ada@example.com") {
		t.Fatalf("users ls: %d %s %s", code, out, errs)
	}
	if code, out, errs := cli("users", "claims", tk.User.ID, `{"role":"editor"}`); code != 0 || !strings.Contains(out, "set claims") {
		t.Fatalf("users claims: %d %s %s", code, out, errs)
	}
	if code, _, errs := cli("users", "claims", tk.User.ID, `not json`); code == 0 || !strings.Contains(errs, "JSON object") {
		t.Fatalf("users claims bad json: %d %s", code, errs)
	}
	if code, out, _ := cli("users", "ls", "-o", "json"); code != 0 || !strings.Contains(out, `"role": "editor"`) {
		t.Fatalf("users ls -o json: %d %s", code, out)
	}
	if code, out, _ := cli("users", "rm", tk.User.ID); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("users rm: %d %s", code, out)
	}
	if code, _, errs := cli("users", "rm", tk.User.ID); code == 0 || !strings.Contains(errs, "404") {
		t.Fatalf("users rm twice: %d %s", code, errs)
	}
}
