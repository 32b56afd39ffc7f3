package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/cli"
	"github.com/nimbusfn/nimbus/internal/compat/s3"
)

// storageServer mounts the kv, objects and S3 helper routes; the API key is
// the tenant name.
func storageServer(t *testing.T) (*httptest.Server, *kv.Service) {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	kvs := kv.New(kv.Config{Bus: b})
	obj := objects.New(objects.Config{Bus: b})
	if err := kvs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := obj.Start(ctx); err != nil {
		t.Fatal(err)
	}
	creds, err := s3.NewKVCredentials(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	s3srv := httptest.NewUnstartedServer(nil)
	api := s3.New(s3.Config{Objects: obj, Credentials: creds, S3URL: "http://" + s3srv.Listener.Addr().String()})
	s3srv.Config.Handler = api
	s3srv.Start()
	t.Cleanup(s3srv.Close)
	mux := http.NewServeMux()
	tenantOf := func(r *http.Request) string { return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") }
	kvs.Routes(mux, tenantOf)
	obj.Routes(mux, tenantOf)
	api.Routes(mux, tenantOf)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = kvs.Stop(context.Background())
	})
	return srv, kvs
}

func run(t *testing.T, srv *httptest.Server, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(append([]string{"--server", srv.URL, "--key", "acme"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, srv *httptest.Server, stdin string, args ...string) string {
	t.Helper()
	out, errs, code := run(t, srv, stdin, args...)
	if code != 0 {
		t.Fatalf("nimbus %v: exit %d: %s%s", args, code, out, errs)
	}
	return out
}

func TestKVCommands(t *testing.T) {
	srv, kvs := storageServer(t)
	mustRun(t, srv, "", "kv", "mb", "todos", "--history", "3")
	if out := mustRun(t, srv, "", "kv", "ls"); !strings.Contains(out, "todos") {
		t.Fatalf("kv ls: %s", out)
	}
	if out := mustRun(t, srv, "", "kv", "put", "todos", "users/ada", `{"done":false}`); !strings.Contains(out, "revision") {
		t.Fatalf("put: %s", out)
	}
	mustRun(t, srv, `{"done":true}`, "kv", "put", "todos", "users/ada", "-d", "-", "--if-revision", "1")
	if _, errs, code := run(t, srv, "", "kv", "put", "todos", "users/ada", `{"x":1}`, "--if-revision", "1"); code == 0 || !strings.Contains(errs, "precondition_failed") {
		t.Fatalf("stale CAS: %d %s", code, errs)
	}
	if _, errs, code := run(t, srv, "", "kv", "put", "todos", "users/bob", `{not json`); code == 0 || !strings.Contains(errs, "JSON") {
		t.Fatalf("bad JSON: %d %s", code, errs)
	}
	var got struct {
		Key      string
		Revision uint64
		Value    map[string]bool
	}
	if err := json.Unmarshal([]byte(mustRun(t, srv, "", "kv", "get", "todos", "users/ada", "-o", "json")), &got); err != nil || got.Revision != 2 || !got.Value["done"] {
		t.Fatalf("get -o json: %+v %v", got, err)
	}
	if out := mustRun(t, srv, "", "kv", "get", "todos", "users/ada", "--history"); strings.Count(out, "put") != 2 {
		t.Fatalf("history: %s", out)
	}
	if out := mustRun(t, srv, "", "kv", "ls", "todos", "--prefix", "users/"); !strings.Contains(out, "users/ada") {
		t.Fatalf("ls todos: %s", out)
	}

	// watch prints a put, and ends when the service stops.
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer pw.Close()
		cli.Main([]string{"--server", srv.URL, "--key", "acme", "kv", "watch", "todos"}, strings.NewReader(""), pw, io.Discard)
	}()
	lines := make(chan string, 10)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				lines <- string(buf[:n])
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	deadline := time.After(20 * time.Second)
	seen := ""
	for !strings.Contains(seen, "users/eve") {
		// Keep writing until the watch (which starts asynchronously) reports one.
		mustRun(t, srv, "", "kv", "put", "todos", "users/eve", `{"hi":1}`)
		select {
		case l := <-lines:
			seen += l
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("watch printed %q", seen)
		}
	}
	_ = kvs.Stop(context.Background())
	wg.Wait()

	mustRun(t, srv, "", "kv", "rm", "todos", "users/ada")
	if _, errs, code := run(t, srv, "", "kv", "get", "todos", "users/ada"); code == 0 || !strings.Contains(errs, "not_found") {
		t.Fatalf("get after rm: %d %s", code, errs)
	}
	mustRun(t, srv, "", "kv", "rb", "todos")
}

func TestObjCommands(t *testing.T) {
	srv, _ := storageServer(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "report.csv")
	if err := os.WriteFile(src, []byte("a,b\n1,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, srv, "", "obj", "mb", "data")
	if out := mustRun(t, srv, "", "obj", "put", src, "data/in/", "--meta", "source=cli"); !strings.Contains(out, "data/in/report.csv") {
		t.Fatalf("put: %s", out)
	}
	mustRun(t, srv, "piped", "obj", "put", "-", "data/piped.txt")
	if out := mustRun(t, srv, "", "obj", "ls", "data"); !strings.Contains(out, "in/") || !strings.Contains(out, "piped.txt") {
		t.Fatalf("ls: %s", out)
	}
	var l struct {
		Objects []struct {
			Key         string `json:"key"`
			ContentType string `json:"content_type"`
		} `json:"objects"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, srv, "", "obj", "ls", "data/in/", "-r", "-o", "json")), &l); err != nil || len(l.Objects) != 1 || l.Objects[0].ContentType != "text/csv; charset=utf-8" {
		t.Fatalf("ls -o json: %+v %v", l, err)
	}
	if out := mustRun(t, srv, "", "obj", "get", "data/in/report.csv"); out != "a,b\n1,2\n" {
		t.Fatalf("get: %q", out)
	}
	dst := filepath.Join(dir, "copy.csv")
	mustRun(t, srv, "", "obj", "get", "data/in/report.csv", dst)
	if b, _ := os.ReadFile(dst); string(b) != "a,b\n1,2\n" {
		t.Fatalf("get to file: %q", b)
	}

	var cr struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, srv, "", "obj", "credentials", "-o", "json")), &cr); err != nil || cr.AccessKeyID == "" || cr.SecretAccessKey == "" {
		t.Fatalf("credentials: %+v %v", cr, err)
	}
	u := strings.TrimSpace(mustRun(t, srv, "", "obj", "presign", "data/in/report.csv", "--expires", "5m"))
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "a,b\n1,2\n" {
		t.Fatalf("presigned GET: %d %q", resp.StatusCode, body)
	}
	if _, errs, code := run(t, srv, "", "obj", "rb", "data"); code == 0 || !strings.Contains(errs, "conflict") {
		t.Fatalf("rb non-empty: %d %s", code, errs)
	}
	mustRun(t, srv, "", "obj", "rm", "data/in/report.csv", "data/piped.txt")
	mustRun(t, srv, "", "obj", "rb", "data")
}
