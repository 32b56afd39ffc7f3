package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

func hello(t testing.TB) []byte { return testenv.BuildWasm(t, "examples/hello", testenv.Reactor) }
func echo(t testing.TB) []byte  { return testenv.BuildWasm(t, "examples/echo", testenv.Reactor) }
func misbehave(t testing.TB) []byte {
	return testenv.BuildWasm(t, "internal/server/testdata/misbehave", testenv.Reactor)
}

// errCode returns the error code of a JSON error document.
func errCode(t *testing.T, body []byte) string {
	t.Helper()
	var doc struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Error.Code == "" {
		t.Fatalf("not an error document: %s", body)
	}
	if doc.Error.Message == "" {
		t.Fatalf("error without a message: %s", body)
	}
	return doc.Error.Code
}

func TestHelloAndEcho(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("hello", hello(t), registry.Config{})
	e.Deploy("echo", echo(t), registry.Config{})

	resp, body := e.Get("/fn/hello?name=Ada")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello, Ada!") {
		t.Fatalf("hello: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Nimbus-Invocation-Id") == "" {
		t.Fatal("no X-Nimbus-Invocation-Id header")
	}

	payload := bytes.Repeat([]byte("x"), 100_000)
	resp, body = e.Do("PUT", "/fn/echo/a/b?q=1&r=two", payload, "X-Custom", "yes", "Content-Type", "text/plain")
	if resp.StatusCode != 200 {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("echo answered non-JSON: %s", body)
	}
	s := string(body)
	for _, want := range []string{`"PUT"`, `/a/b`, `"q"`, `"two"`, `X-Custom`, `yes`} {
		if !strings.Contains(s, want) {
			t.Errorf("echo response lacks %s: %.300s", want, s)
		}
	}
	if !strings.Contains(s, strings.Repeat("x", 1000)) {
		t.Errorf("echo response lacks the body")
	}
}

func TestCGIExample(t *testing.T) {
	e := testenv.Start(t)
	cgi := testenv.BuildWasm(t, "examples/cgi", testenv.Command)
	v := e.Deploy("cgi", cgi, registry.Config{})
	if v.Config.Runtime != "wasm-cgi" {
		t.Fatalf("runtime detected as %q, want wasm-cgi", v.Config.Runtime)
	}
	resp, body := e.Get("/fn/cgi/some/path?x=1")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/some/path") || !strings.Contains(string(body), "x=1") {
		t.Fatalf("cgi: %d %q", resp.StatusCode, body)
	}
}

func TestBadDeploys(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("hello", hello(t), registry.Config{})
	importer := testenv.BuildWasm(t, "internal/server/testdata/importer", testenv.Command)
	cases := []struct {
		name, fn string
		code     []byte
		cfg      registry.Config
		status   int
		code2    string
		mention  string
	}{
		{"not wasm", "x", []byte("#!/bin/sh\necho hi\n"), registry.Config{}, 400, "invalid_runtime", "runtime"},
		{"garbage wasm", "x", []byte("\x00asm\x01\x00\x00\x00garbage"), registry.Config{}, 400, "invalid_code", ""},
		{"unknown import", "x", importer, registry.Config{}, 400, "invalid_code", "launch_missiles"},
		{"bad name", "Hello_World", hello(t), registry.Config{}, 400, "invalid_name", "lower-case"},
		{"unknown runtime", "x", hello(t), registry.Config{Runtime: "cobol"}, 400, "invalid_runtime", "cobol"},
		{"bad memory", "x", hello(t), registry.Config{MemoryMB: -5}, 400, "invalid_config", "memory"},
		{"overwrite with junk", "hello", []byte("junk"), registry.Config{Runtime: "wasm"}, 400, "invalid_code", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := e.DeployRaw(c.fn, c.code, c.cfg)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			if code := errCode(t, body); code != c.code2 {
				t.Fatalf("code %q, want %q: %s", code, c.code2, body)
			}
			if c.mention != "" && !strings.Contains(string(body), c.mention) {
				t.Fatalf("error does not mention %q: %s", c.mention, body)
			}
		})
	}
	// Nothing stored was changed: hello still answers at version 1, x does not exist.
	if resp, body := e.Get("/fn/hello"); resp.StatusCode != 200 {
		t.Fatalf("hello after bad deploys: %d %s", resp.StatusCode, body)
	}
	resp, body := e.Get("/api/v1/functions/hello")
	var fv struct{ Latest int }
	_ = json.Unmarshal(body, &fv)
	if resp.StatusCode != 200 || fv.Latest != 1 {
		t.Fatalf("hello changed by bad deploys: %s", body)
	}
	if resp, _ := e.Get("/api/v1/functions/x"); resp.StatusCode != 404 {
		t.Fatalf("a refused deploy left function x behind")
	}
}

func TestGatewayErrors(t *testing.T) {
	e := testenv.Start(t, func(c *server.Config) { c.MaxBody = 1 << 20 })
	e.Deploy("mis", misbehave(t), registry.Config{Timeout: registry.Duration(5 * time.Second), MemoryMB: 32})

	resp, body := e.Get("/fn/nope")
	if resp.StatusCode != 404 || errCode(t, body) != "function_not_found" {
		t.Fatalf("unknown function: %d %s", resp.StatusCode, body)
	}
	resp, body = e.Get("/fn/mis@7")
	if resp.StatusCode != 404 || errCode(t, body) != "version_not_found" {
		t.Fatalf("unknown version: %d %s", resp.StatusCode, body)
	}
	resp, body = e.Do("POST", "/fn/mis/size", bytes.Repeat([]byte("a"), 2<<20))
	if resp.StatusCode != 413 || errCode(t, body) != "payload_too_large" {
		t.Fatalf("big body: %d %s", resp.StatusCode, body)
	}
	resp, body = e.Do("POST", "/fn/mis/size", bytes.Repeat([]byte("a"), 1<<19))
	if resp.StatusCode != 200 || string(body) != fmt.Sprint(1<<19) {
		t.Fatalf("body under the limit: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct{ path, code string }{
		{"/loop", "timeout"},
		{"/alloc", "out_of_memory"},
		{"/panic", "function_crashed"},
	} {
		resp, body := e.Get("/fn/mis" + c.path)
		if got := errCode(t, body); got != c.code {
			t.Errorf("%s: %d %s, want code %s", c.path, resp.StatusCode, body, c.code)
		}
		// The next request is served by a fresh instance.
		if resp, body := e.Get("/fn/mis/"); resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok 1") {
			t.Errorf("after %s: %d %q, want a fresh instance's first answer", c.path, resp.StatusCode, body)
		}
	}
	if resp, body := e.Get("/fn/mis/loop"); resp.StatusCode != 504 {
		t.Errorf("loop: %d %s, want 504", resp.StatusCode, body)
	}
}

func TestBadCGIOutput(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("bad", testenv.BuildWasm(t, "internal/server/testdata/badcgi", testenv.Command), registry.Config{})
	resp, body := e.Get("/fn/bad")
	if resp.StatusCode != 502 || errCode(t, body) != "bad_function_response" {
		t.Fatalf("bad cgi: %d %s", resp.StatusCode, body)
	}
}

func TestVersionsAndAliases(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("fn", hello(t), registry.Config{})
	v2 := e.Deploy("fn", echo(t), registry.Config{})
	if v2.Number != 2 {
		t.Fatalf("second deploy got version %d", v2.Number)
	}
	if _, body := e.Get("/fn/fn"); !strings.Contains(string(body), `"method"`) && !strings.Contains(string(body), "GET") {
		t.Fatalf("live does not follow the newest version: %s", body)
	}
	if _, body := e.Get("/fn/fn@1"); !strings.Contains(string(body), "Hello") {
		t.Fatalf("@1: %s", body)
	}
	// Pin live to 1.
	resp, body := e.Do("PUT", "/api/v1/functions/fn/aliases/live", []byte(`{"version":1}`))
	if resp.StatusCode != 200 {
		t.Fatalf("pin live: %d %s", resp.StatusCode, body)
	}
	if _, body := e.Get("/fn/fn"); !strings.Contains(string(body), "Hello") {
		t.Fatalf("pinned live: %s", body)
	}
	// A third deploy does not move a pinned live.
	e.Deploy("fn", echo(t), registry.Config{})
	if _, body := e.Get("/fn/fn"); !strings.Contains(string(body), "Hello") {
		t.Fatalf("pinned live moved: %s", body)
	}
	// Named alias.
	if resp, body := e.Do("PUT", "/api/v1/functions/fn/aliases/beta", []byte(`{"version":3}`)); resp.StatusCode != 200 {
		t.Fatalf("beta: %d %s", resp.StatusCode, body)
	}
	if _, body := e.Get("/fn/fn@beta"); strings.Contains(string(body), "Hello") {
		t.Fatalf("@beta: %s", body)
	}
	if resp, body := e.Do("PUT", "/api/v1/functions/fn/aliases/bad", []byte(`{"version":9}`)); resp.StatusCode != 404 {
		t.Fatalf("alias to missing version: %d %s", resp.StatusCode, body)
	}
	_, body = e.Get("/api/v1/functions/fn/versions")
	var vs struct{ Versions []registry.Version }
	if err := json.Unmarshal(body, &vs); err != nil || len(vs.Versions) != 3 {
		t.Fatalf("versions: %s", body)
	}
	if resp, _ := e.Do("DELETE", "/api/v1/functions/fn", nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp, _ := e.Get("/fn/fn"); resp.StatusCode != 404 {
		t.Fatalf("deleted function still answers: %d", resp.StatusCode)
	}
}

func TestLogs(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{})
	resp, _ := e.Get("/fn/mis/log?msg=marker-42")
	id := resp.Header.Get("X-Nimbus-Invocation-Id")
	testenv.Eventually(t, 10*time.Second, func() error {
		_, body := e.Get("/api/v1/functions/mis/logs?since=1h")
		s := string(body)
		if !strings.Contains(s, "to stdout: marker-42") || !strings.Contains(s, "to stderr: marker-42") {
			return fmt.Errorf("logs so far: %s", s)
		}
		if !strings.Contains(s, id) {
			return fmt.Errorf("log lines lack the invocation id %s: %s", id, s)
		}
		return nil
	})
}

func TestRestartKeepsFunctions(t *testing.T) {
	dir := t.TempDir()
	cfg := server.Config{Listen: "127.0.0.1:0", DataDir: dir, Node: "test"}
	e := testenv.StartConfig(t, cfg)
	e.Deploy("hello", hello(t), registry.Config{})
	e.Deploy("hello", hello(t), registry.Config{Env: map[string]string{"A": "1"}})
	e.Stop()
	key1, _ := os.ReadFile(filepath.Join(dir, "admin.key"))
	st, err := os.Stat(filepath.Join(dir, "admin.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key: %v %v", err, st.Mode())
	}

	e2 := testenv.StartConfig(t, cfg)
	resp, body := e2.Get("/fn/hello?name=again")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "again") {
		t.Fatalf("after restart: %d %s", resp.StatusCode, body)
	}
	_, body = e2.Get("/api/v1/functions/hello")
	var fv struct{ Latest int }
	_ = json.Unmarshal(body, &fv)
	if fv.Latest != 2 {
		t.Fatalf("after restart latest = %d: %s", fv.Latest, body)
	}
	key2, _ := os.ReadFile(filepath.Join(dir, "admin.key"))
	if !bytes.Equal(key1, key2) {
		t.Fatal("admin key changed across restart")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "cache", "wasm"))
	if len(entries) == 0 {
		t.Fatal("no compiled code cached on disk")
	}
}

func TestGracefulStopFinishesInFlight(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{})
	e.Get("/fn/mis/") // warm
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(e.URL + "/fn/mis/sleep?ms=700")
		if err != nil {
			done <- err.Error()
			return
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		done <- fmt.Sprint(resp.StatusCode, " ", b.String())
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if st := e.Invoker.Stats("default", "mis"); st[1].Busy == 1 {
			return nil
		}
		return fmt.Errorf("request not in flight yet")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != "200 slept" {
		t.Fatalf("in-flight request during stop: %s", got)
	}
}

func TestDeleteWhileInvoking(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{})
	e.Deploy("other", hello(t), registry.Config{})
	var wg sync.WaitGroup
	results := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.URL + "/fn/mis/sleep?ms=50")
			if err != nil {
				results <- -1
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := e.Invoker.Stats("default", "mis"); st[1].InFlight > 0 {
			return nil
		}
		return fmt.Errorf("no request in flight yet")
	})
	if resp, body := e.Do("DELETE", "/api/v1/functions/mis", nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	wg.Wait()
	close(results)
	for code := range results {
		if code != 200 && code != 404 && code != 503 {
			t.Errorf("request during delete answered %d", code)
		}
	}
	if resp, _ := e.Get("/fn/mis/"); resp.StatusCode != 404 {
		t.Fatalf("deleted function answers %d", resp.StatusCode)
	}
	if resp, _ := e.Get("/fn/other"); resp.StatusCode != 200 {
		t.Fatalf("other function broken by the delete: %d", resp.StatusCode)
	}
}
