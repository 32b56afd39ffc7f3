//go:build linux

package process

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// A process function reaches the host API on its own local endpoint, named
// with its token in NIMBUS_HOST_API and NIMBUS_HOST_TOKEN.
func TestHostAPIEndpoint(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "hostfn")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/hostfn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	code, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	k := kv.New(kv.Config{Bus: b, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop(context.Background()) })
	host := hostapi.New(hostapi.Services{KV: k}).For(&registry.Version{Tenant: "acme", Function: "fn", Number: 1})

	rt := newRuntime(t)
	tpl, _ := prepare(t, rt, code, "", func(s *runtime.Spec) { s.Tenant = "acme"; s.Host = host })
	defer tpl.Close()
	in := start(t, tpl)

	rec, err := call(t, in, ctx, "PUT", "/kv/greeting", []byte(`{"hello":"world"}`))
	if err != nil || rec.Code != http.StatusNoContent {
		t.Fatalf("put: %v %d %s", err, rec.Code, rec.Body)
	}
	rec, err = call(t, in, ctx, "GET", "/kv/greeting", nil)
	if err != nil || rec.Code != 200 || rec.Body.String() != `{"hello":"world"}` {
		t.Fatalf("get: %v %d %s", err, rec.Code, rec.Body)
	}
	// The value is in the tenant's bucket, where any other host API user of
	// the tenant (here: the Go API) sees it.
	if v, err := host.KVGet(ctx, "data", "greeting"); err != nil || string(v) != `{"hello":"world"}` {
		t.Fatalf("host view: %q %v", v, err)
	}
	rec, err = call(t, in, ctx, "GET", "/kv/missing", nil)
	if err != nil || rec.Code != http.StatusNotFound {
		t.Fatalf("missing: %v %d %s", err, rec.Code, rec.Body)
	}
	rec, err = call(t, in, ctx, "GET", "/secret/NOT_NAMED", nil)
	if err != nil || rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "config.secrets") {
		t.Fatalf("unnamed secret: %v %d %s", err, rec.Code, rec.Body)
	}

	url := in.hostEP.URL
	closeAndCheck(t, in)
	if resp, err := http.Get(url + "/v1/kv/data/greeting"); err == nil {
		resp.Body.Close()
		t.Fatal("host API endpoint still answers after the instance closed")
	}
}
