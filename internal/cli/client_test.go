package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// recorded is one request the fake API server saw.
type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fakeServer is a real HTTP server that records requests and answers with
// the handler given for "METHOD /path" (or 404 function_not_found).
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []recorded
	handlers map[string]http.HandlerFunc
}

func newFakeServer(t *testing.T, handlers map[string]http.HandlerFunc) *fakeServer {
	t.Helper()
	fs := &fakeServer{handlers: handlers}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.reqs = append(fs.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		fs.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		fs.mu.Lock()
		h, ok := fs.handlers[r.Method+" "+r.URL.Path]
		if !ok {
			for k, hh := range fs.handlers {
				if p, found := strings.CutSuffix(k, "*"); found && strings.HasPrefix(r.Method+" "+r.URL.Path, p) {
					h, ok = hh, true
				}
			}
		}
		fs.mu.Unlock()
		if ok {
			h(w, r)
			return
		}
		apierr.Write(w, apierr.New(apierr.NotFound, "no route %s %s", r.Method, r.URL.Path))
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fakeServer) handle(key string, h http.HandlerFunc) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.handlers[key] = h
}

func (fs *fakeServer) requests() []recorded {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]recorded(nil), fs.reqs...)
}

func (fs *fakeServer) find(method, path string) []recorded {
	var out []recorded
	for _, r := range fs.requests() {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// run calls Main in-process and returns exit code, stdout and stderr.
func run(t *testing.T, server string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--server", server, "--key", "test-key"}, args...)
	code := Main(full, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestInvoke(t *testing.T) {
	srv := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /fn/hello": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Nimbus-Invocation-Id", "inv-1")
			io.WriteString(w, "Hello, world!")
		},
		"POST /fn/echo/sub/path": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Nimbus-Invocation-Id", "inv-2")
			body, _ := io.ReadAll(r.Body)
			writeJSON(w, 200, map[string]string{"ct": r.Header.Get("Content-Type"), "body": string(body), "x": r.Header.Get("X-Thing"), "q": r.URL.RawQuery})
		},
		"GET /fn/broken": func(w http.ResponseWriter, r *http.Request) {
			apierr.Write(w, apierr.New(apierr.FunctionCrashed, "function broken trapped: unreachable"))
		},
		"GET /fn/teapot": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout")
		},
		"PUT /fn/hello@2": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "v2")
		},
		"POST /async/report/run": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusAccepted, map[string]string{"id": "async-42"})
		},
	})
	dataFile := filepath.Join(t.TempDir(), "body.bin")
	if err := os.WriteFile(dataFile, []byte{0xff, 0x00, 0x01}, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("ok prints the body", func(t *testing.T) {
		code, out, errs := run(t, srv.URL, "", "invoke", "hello")
		if code != 0 || out != "Hello, world!" || errs != "" {
			t.Fatalf("code=%d out=%q err=%q", code, out, errs)
		}
		r := srv.find("GET", "/fn/hello")
		if len(r) != 1 || r[0].Header.Get("Authorization") != "Bearer test-key" {
			t.Fatalf("requests = %+v", r)
		}
	})
	t.Run("-d implies POST with JSON, headers and path", func(t *testing.T) {
		code, out, errs := run(t, srv.URL, "", "invoke", "echo", "-d", `{"name":"Ada"}`, "--path", "sub/path?x=1", "-H", "X-Thing: yes")
		if code != 0 {
			t.Fatalf("code=%d err=%q", code, errs)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("out %q: %v", out, err)
		}
		want := map[string]string{"ct": "application/json", "body": `{"name":"Ada"}`, "x": "yes", "q": "x=1"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q; want %q", k, got[k], v)
			}
		}
	})
	t.Run("-d @file and @- and -i", func(t *testing.T) {
		code, _, errs := run(t, srv.URL, "", "invoke", "echo", "--path", "/sub/path", "-d", "@"+dataFile, "-i")
		if code != 0 || !strings.Contains(errs, "200 OK") || !strings.Contains(errs, "X-Nimbus-Invocation-Id: inv-2") {
			t.Fatalf("code=%d err=%q", code, errs)
		}
		reqs := srv.find("POST", "/fn/echo/sub/path")
		last := reqs[len(reqs)-1]
		if !bytes.Equal(last.Body, []byte{0xff, 0x00, 0x01}) || last.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("body %q content-type %q", last.Body, last.Header.Get("Content-Type"))
		}
		code, _, errs = run(t, srv.URL, "from stdin", "invoke", "echo", "--path", "/sub/path", "-d", "@-")
		reqs = srv.find("POST", "/fn/echo/sub/path")
		if code != 0 || string(reqs[len(reqs)-1].Body) != "from stdin" {
			t.Fatalf("code=%d err=%q body=%q", code, errs, reqs[len(reqs)-1].Body)
		}
	})
	t.Run("API error: exit 1 and message on stderr", func(t *testing.T) {
		code, out, errs := run(t, srv.URL, "", "invoke", "broken")
		if code != 1 || out != "" || !strings.Contains(errs, "function broken trapped: unreachable") || !strings.Contains(errs, "function_crashed") {
			t.Fatalf("code=%d out=%q err=%q", code, out, errs)
		}
	})
	t.Run("function 4xx: exit 1, body on stdout", func(t *testing.T) {
		code, out, errs := run(t, srv.URL, "", "invoke", "teapot")
		if code != 1 || out != "short and stout" || !strings.Contains(errs, "418") {
			t.Fatalf("code=%d out=%q err=%q", code, out, errs)
		}
	})
	t.Run("unknown function", func(t *testing.T) {
		code, _, errs := run(t, srv.URL, "", "invoke", "nope")
		if code != 1 || !strings.Contains(errs, "404") {
			t.Fatalf("code=%d err=%q", code, errs)
		}
	})
	t.Run("-X and a qualifier", func(t *testing.T) {
		code, out, _ := run(t, srv.URL, "", "invoke", "hello@2", "-X", "put")
		if code != 0 || out != "v2" {
			t.Fatalf("code=%d out=%q", code, out)
		}
	})
	t.Run("async prints the id", func(t *testing.T) {
		code, out, errs := run(t, srv.URL, "", "invoke", "report", "--async", "--path", "/run", "-d", "{}")
		if code != 0 || out != "async-42\n" {
			t.Fatalf("code=%d out=%q err=%q", code, out, errs)
		}
	})
	t.Run("bad header", func(t *testing.T) {
		code, _, errs := run(t, srv.URL, "", "invoke", "hello", "-H", "novalue")
		if code != 1 || !strings.Contains(errs, "Name: value") {
			t.Fatalf("code=%d err=%q", code, errs)
		}
	})
	t.Run("server down", func(t *testing.T) {
		code, _, errs := run(t, "http://127.0.0.1:1", "", "invoke", "hello")
		if code != 1 || !strings.Contains(errs, "cannot reach") {
			t.Fatalf("code=%d err=%q", code, errs)
		}
	})
}

// tinyWasm is the smallest valid module: the magic and version.
var tinyWasm = []byte{0, 'a', 's', 'm', 1, 0, 0, 0}

// deployServer is a fake API that stores artifacts by digest and creates
// versions.
func deployServer(t *testing.T) *fakeServer {
	var mu sync.Mutex
	have := map[string]bool{}
	versions := map[string]int{}
	srv := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /api/v1/artifacts": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			d := digestOf(b)
			mu.Lock()
			have[d] = true
			mu.Unlock()
			writeJSON(w, 201, map[string]any{"digest": d, "size": len(b)})
		},
		"POST /api/v1/functions": func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				Name   string          `json:"name"`
				Digest string          `json:"digest"`
				Config registry.Config `json:"config"`
			}
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				apierr.Write(w, apierr.New(apierr.BadRequest, "bad json: %v", err))
				return
			}
			mu.Lock()
			ok := have[in.Digest]
			versions[in.Name]++
			n := versions[in.Name]
			mu.Unlock()
			if !ok {
				apierr.Write(w, apierr.New(apierr.InvalidCode, "artifact %s is not stored", in.Digest))
				return
			}
			writeJSON(w, 201, Version{Tenant: "default", Function: in.Name, Number: n, Created: time.Now(), Digest: in.Digest, Config: in.Config})
		},
	})
	withHead(srv, have, &mu)
	return srv
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// withHead answers HEAD /api/v1/artifacts/{digest}: 200 when stored, else 404.
func withHead(srv *fakeServer, have map[string]bool, mu *sync.Mutex) {
	srv.handle("HEAD /api/v1/artifacts/*", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := have[strings.TrimPrefix(r.URL.Path, "/api/v1/artifacts/")]
		mu.Unlock()
		if ok {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(404)
	})
}

func TestDeployUploadSkip(t *testing.T) {
	srv := deployServer(t)
	wasm := filepath.Join(t.TempDir(), "fn.wasm")
	if err := os.WriteFile(wasm, tinyWasm, 0o644); err != nil {
		t.Fatal(err)
	}
	d := digestOf(tinyWasm)

	// First deploy: HEAD 404 → upload → create.
	code, out, errs := run(t, srv.URL, "", "deploy", "hello", "--code", wasm, "--memory", "64", "--env", "A=1", "--env", "B=x=y", "--timeout", "5s", "--snapshot=false")
	if code != 0 {
		t.Fatalf("deploy: code=%d err=%q", code, errs)
	}
	if want := "deployed hello version 1 → " + srv.URL + "/fn/hello\n"; out != want {
		t.Errorf("out = %q; want %q", out, want)
	}
	if n := len(srv.find("POST", "/api/v1/artifacts")); n != 1 {
		t.Fatalf("artifact uploads = %d; want 1", n)
	}
	if got := srv.find("HEAD", "/api/v1/artifacts/"+d); len(got) != 1 {
		t.Fatalf("HEAD requests = %d", len(got))
	}
	creates := srv.find("POST", "/api/v1/functions")
	var body struct {
		Name   string         `json:"name"`
		Digest string         `json:"digest"`
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(creates[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Name != "hello" || body.Digest != d {
		t.Errorf("create body = %s", creates[0].Body)
	}
	c := body.Config
	if c["memory_mb"] != 64.0 || c["timeout"] != "5s" || c["snapshot"] != false ||
		c["env"].(map[string]any)["B"] != "x=y" || c["runtime"] != "" {
		t.Errorf("config = %v", c)
	}
	for _, unset := range []string{"concurrency", "max_requests", "auth", "entry"} {
		if _, ok := c[unset]; ok {
			t.Errorf("config has %s although no flag set it: %v", unset, c)
		}
	}

	// Second deploy of the same code: HEAD 200 → no upload.
	code, out, errs = run(t, srv.URL, "", "deploy", "hello", "--code", wasm)
	if code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("redeploy: code=%d out=%q err=%q", code, out, errs)
	}
	if n := len(srv.find("POST", "/api/v1/artifacts")); n != 1 {
		t.Errorf("artifact uploads after redeploy = %d; want still 1", n)
	}
	creates = srv.find("POST", "/api/v1/functions")
	body.Config = nil
	if err := json.Unmarshal(creates[1].Body, &body); err != nil {
		t.Fatal(err)
	}
	if _, ok := body.Config["memory_mb"]; ok {
		t.Errorf("second deploy sent memory without the flag: %s", creates[1].Body)
	}
}

func TestDeployErrors(t *testing.T) {
	srv := deployServer(t)
	dir := t.TempDir()
	notWasm := filepath.Join(dir, "bad.wasm")
	os.WriteFile(notWasm, []byte("hello"), 0o644)
	other := filepath.Join(dir, "thing.bin")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "Bad_Name", "--code", notWasm}, "lower-case"},
		{[]string{"deploy", "hello"}, "--code"},
		{[]string{"deploy", "hello", "--code", notWasm}, "not a WebAssembly module"},
		{[]string{"deploy", "hello", "--code", filepath.Join(dir, "missing.wasm")}, "no such file"},
		{[]string{"deploy", "hello", "--code", other}, "--runtime"},
		{[]string{"deploy", "hello", "--code", notWasm, "--timeout", "soon"}, "--timeout"},
		{[]string{"deploy", "hello", "--code", notWasm, "--env", "NOEQUALS"}, "KEY=VALUE"},
		{[]string{"deploy", "hello", "--code", notWasm, "--auth", "maybe"}, "--auth"},
		{[]string{"deploy", "hello", "--code", dir}, "no .go files"},
	}
	for _, c := range cases {
		code, _, errs := run(t, srv.URL, "", c.args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code=%d err=%q; want it to mention %q", c.args, code, errs, c.want)
		}
	}
	if n := len(srv.find("POST", "/api/v1/functions")); n != 0 {
		t.Errorf("bad input reached the server %d times", n)
	}
}

func TestDeployStack(t *testing.T) {
	srv := deployServer(t)
	var trigMu sync.Mutex
	var trig []recorded
	srv.handle("PUT /api/v1/functions/hello/triggers/*", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		trigMu.Lock()
		trig = append(trig, recorded{Path: r.URL.Path, Body: b})
		trigMu.Unlock()
		writeJSON(w, 200, json.RawMessage(b))
	})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "fns"), 0o755)
	os.WriteFile(filepath.Join(dir, "fns", "hello.wasm"), tinyWasm, 0o644)
	py := filepath.Join(dir, "py")
	os.MkdirAll(py, 0o755)
	os.WriteFile(filepath.Join(py, "handler.py"), []byte("def handler(e, c):\n    return 'hi'\n"), 0o644)
	stackFile := filepath.Join(dir, "nimbus.yaml")
	os.WriteFile(stackFile, []byte(`version: 1
functions:
  hello:
    code: ./fns/hello.wasm
    memory: 32
    triggers:
      - {name: nightly, kind: schedule, schedule: {cron: "0 3 * * *"}}
      - {kind: topic, topic: {topic: orders}}
  greet:
    code: py
`), 0o644)

	code, out, errs := run(t, srv.URL, "", "deploy", "-f", stackFile)
	if code != 0 {
		t.Fatalf("code=%d err=%q", code, errs)
	}
	for _, want := range []string{"deployed greet version 1", "deployed hello version 1", "trigger nightly of hello set", "trigger topic-2 of hello set"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	var runtimes = map[string]string{}
	for _, r := range srv.find("POST", "/api/v1/functions") {
		var b struct {
			Name   string          `json:"name"`
			Config registry.Config `json:"config"`
		}
		json.Unmarshal(r.Body, &b)
		runtimes[b.Name] = b.Config.Runtime
		if b.Name == "hello" && b.Config.MemoryMB != 32 {
			t.Errorf("hello memory = %d", b.Config.MemoryMB)
		}
	}
	if runtimes["greet"] != "python3" || runtimes["hello"] != "" {
		t.Errorf("runtimes = %v", runtimes)
	}
	trigMu.Lock()
	defer trigMu.Unlock()
	if len(trig) != 2 {
		t.Fatalf("triggers = %+v", trig)
	}
	var t2 map[string]any
	json.Unmarshal(trig[1].Body, &t2)
	if t2["name"] != "topic-2" || t2["kind"] != "topic" {
		t.Errorf("second trigger body = %s", trig[1].Body)
	}

	// A broken stack file names the line and deploys nothing.
	before := len(srv.find("POST", "/api/v1/functions"))
	os.WriteFile(stackFile, []byte("version: 1\nfunctions:\n  hello:\n    code: x.wasm\n    memroy: 3\n"), 0o644)
	code, _, errs = run(t, srv.URL, "", "deploy", "-f", stackFile)
	if code != 1 || !strings.Contains(errs, "nimbus.yaml:5:") || !strings.Contains(errs, "memroy") {
		t.Errorf("code=%d err=%q", code, errs)
	}
	if after := len(srv.find("POST", "/api/v1/functions")); after != before {
		t.Errorf("a broken stack file deployed %d functions", after-before)
	}
}

func TestPackageCode(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	node := filepath.Join(dir, "node")
	write("node/handler.js", []byte("exports.handler = async () => 'hi'\n"))
	write("node/lib/util.js", []byte("module.exports = 1\n"))
	write("node/.git/HEAD", []byte("ref\n"))
	boot := write("lambda/bootstrap", []byte("\x7fELF fake"))
	zipped, err := zipDir(node)
	if err != nil {
		t.Fatal(err)
	}
	zipFile := write("bundle.zip", zipped)
	cases := []struct {
		path, runtime, want string
	}{
		{node, "", "nodejs"},
		{boot, "", "lambda"},
		{filepath.Dir(boot), "", "lambda"},
		{zipFile, "", "nodejs"},
		{zipFile, "process", "process"},
		{write("m.wasm", tinyWasm), "", ""},
		{write("m.wasm", tinyWasm), "wasm-cgi", "wasm-cgi"},
	}
	for _, c := range cases {
		_, rt, err := packageCode(t.Context(), c.path, c.runtime, nil)
		if err != nil || rt != c.want {
			t.Errorf("packageCode(%s, %q) = %q, %v; want %q", c.path, c.runtime, rt, err, c.want)
		}
	}
	// Zipping is deterministic and leaves hidden directories out.
	again, _ := zipDir(node)
	if !bytes.Equal(zipped, again) {
		t.Error("zipping the same directory twice gave different bytes")
	}
	if bytes.Contains(zipped, []byte(".git/HEAD")) || !bytes.Contains(zipped, []byte("lib/util.js")) {
		t.Error("zip contents are wrong")
	}
	if _, _, err := packageCode(t.Context(), write("x.zip", []byte("not a zip")), "", nil); err == nil {
		t.Error("a broken zip was accepted")
	}
}

func TestListingCommands(t *testing.T) {
	created := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	fv := FunctionView{
		Name: "hello", Tenant: "default", Created: created, Updated: created, Latest: 3,
		Aliases: map[string]registry.Alias{"live": {Version: 2}, "canary": {Version: 3, Additional: 2, Weight: 0.25}},
		Runtime: "wasm", URL: "http://example.test/fn/hello",
		Config:    registry.Config{Runtime: "wasm", MemoryMB: 64, Env: map[string]string{"GREETING": "hi"}},
		Instances: Instances{Idle: 2, Busy: 1, Desired: 3}, InFlight: 1,
	}
	logs := strings.Join([]string{
		`{"time":"2026-11-01T10:00:00Z","function":"hello","version":3,"invocation_id":"inv-a","stream":"stdout","line":"hello out"}`,
		`{"time":"2026-11-01T10:00:01Z","function":"hello","version":3,"invocation_id":"inv-a","stream":"stderr","line":"oops"}`,
	}, "\n") + "\n"
	srv := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /api/v1/functions": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"functions": []FunctionView{fv}})
		},
		"GET /api/v1/functions/hello": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, fv) },
		"GET /api/v1/functions/hello/versions": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"versions": []Version{
				{Function: "hello", Number: 1, Created: created, Digest: "sha256:" + strings.Repeat("ab", 32), Size: 2048, Config: registry.Config{Runtime: "wasm"}},
				{Function: "hello", Number: 2, Created: created, Digest: "sha256:" + strings.Repeat("cd", 32), Size: 4096, Config: registry.Config{Runtime: "wasm"}},
			}})
		},
		"PUT /api/v1/functions/hello/aliases/canary": func(w http.ResponseWriter, r *http.Request) {
			var a registry.Alias
			json.NewDecoder(r.Body).Decode(&a)
			writeJSON(w, 200, a)
		},
		"DELETE /api/v1/functions/hello/aliases/canary": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
		"DELETE /api/v1/functions/hello":                func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
		"GET /api/v1/functions/hello/logs": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, logs)
		},
		"GET /api/v1/info": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, ServerInfo{Version: "v0.1.0", Node: "n1", Runtimes: []string{"wasm", "wasm-cgi"}})
		},
	})
	check := func(args []string, wants ...string) string {
		t.Helper()
		code, out, errs := run(t, srv.URL, "", args...)
		if code != 0 {
			t.Fatalf("%v: code=%d err=%q", args, code, errs)
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", args, w, out)
			}
		}
		return out
	}
	check([]string{"ls"}, "NAME", "RUNTIME", "INSTANCES", "hello", "wasm", "2 (latest 3)", "3 (1 busy)", "http://example.test/fn/hello")
	out := check([]string{"ls", "-o", "json"})
	var list struct{ Functions []FunctionView }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Functions) != 1 || list.Functions[0].InFlight != 1 {
		t.Errorf("ls -o json = %q (%v)", out, err)
	}
	check([]string{"get", "hello"}, "name:", "hello", "live → version 2", "canary → version 3 (25% to version 2)", "1 busy", "memory_mb:", "64", "env.GREETING:", "hi")
	out = check([]string{"get", "hello", "-o", "json"})
	var got FunctionView
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Latest != 3 {
		t.Errorf("get -o json = %q (%v)", out, err)
	}
	out = check([]string{"versions", "hello"}, "VERSION", "sha256:cdcdcdcdcdcd", "4.0 KB")
	if strings.Index(out, "\n2 ") > strings.Index(out, "\n1 ") {
		t.Errorf("versions are not newest first:\n%s", out)
	}
	check([]string{"versions", "hello", "-o", "json"}, `"versions"`)
	check([]string{"alias", "hello", "canary", "3", "--split", "2:0.1"}, "alias canary of hello → version 3 (10% to version 2)")
	puts := srv.find("PUT", "/api/v1/functions/hello/aliases/canary")
	if string(bytes.TrimSpace(puts[0].Body)) != `{"version":3,"additional_version":2,"weight":0.1}` {
		t.Errorf("alias body = %s", puts[0].Body)
	}
	check([]string{"alias", "hello", "canary", "--delete"}, "removed alias canary")
	check([]string{"rm", "hello"}, "removed hello")
	out = check([]string{"logs", "hello", "--since", "10m", "--grep", "o", "--invocation", "inv-a", "--limit", "5"}, "[inv-a] hello out", "[inv-a] stderr| oops")
	if strings.Count(out, "\n") != 2 {
		t.Errorf("logs output = %q", out)
	}
	lr := srv.find("GET", "/api/v1/functions/hello/logs")
	for _, q := range []string{"since=10m", "grep=o", "invocation=inv-a", "limit=5"} {
		if !strings.Contains(lr[0].Query, q) {
			t.Errorf("logs query %q lacks %q", lr[0].Query, q)
		}
	}
	check([]string{"logs", "hello", "-o", "json"}, `"line":"oops"`)
	check([]string{"version"}, "cli:", "v0.1.0", "node n1", "wasm, wasm-cgi")

	// Errors from the server come out as messages, exit code 1.
	code, _, errs := run(t, srv.URL, "", "get", "nope")
	if code != 1 || !strings.Contains(errs, "not_found") {
		t.Errorf("get nope: code=%d err=%q", code, errs)
	}
	code, _, errs = run(t, srv.URL, "", "alias", "hello", "live", "x")
	if code != 1 || !strings.Contains(errs, "version") {
		t.Errorf("alias bad version: code=%d err=%q", code, errs)
	}
	code, _, errs = run(t, srv.URL, "", "ls", "-o", "yaml")
	if code != 1 || !strings.Contains(errs, "json") {
		t.Errorf("ls -o yaml: code=%d err=%q", code, errs)
	}
	// version still works without a server.
	code, out, _ = run(t, "http://127.0.0.1:1", "", "version")
	if code != 0 || !strings.Contains(out, "not reachable") {
		t.Errorf("version without server: code=%d out=%q", code, out)
	}
}

func TestLogsFollowStreams(t *testing.T) {
	// The server writes one line, flushes and waits: the CLI must print the
	// line before the stream ends.
	release := make(chan struct{})
	srv := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /api/v1/functions/hello/logs": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, `{"time":"2026-11-01T10:00:00Z","invocation_id":"inv-f","stream":"stdout","line":"first"}`+"\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
	})
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := Main([]string{"--server", srv.URL, "logs", "hello", "-f"}, strings.NewReader(""), pw, io.Discard)
		pw.Close()
		done <- code
	}()
	line := make([]byte, 0, 128)
	buf := make([]byte, 1)
	for !bytes.HasSuffix(line, []byte("\n")) {
		if _, err := pr.Read(buf); err != nil {
			t.Fatalf("reading: %v", err)
		}
		line = append(line, buf[0])
	}
	if !strings.Contains(string(line), "[inv-f] first") {
		t.Errorf("line = %q", line)
	}
	if q := srv.find("GET", "/api/v1/functions/hello/logs")[0].Query; q != "follow=1" {
		t.Errorf("query = %q", q)
	}
	close(release)
	go io.Copy(io.Discard, pr)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f did not end when the stream ended")
	}
}

func TestEveryCommandHasExample(t *testing.T) {
	app := &App{Stdout: io.Discard, Stderr: io.Discard}
	root := app.Root()
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			seen++
			if strings.TrimSpace(sub.Example) == "" {
				t.Errorf("command %q has no Example", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(root)
	for _, name := range []string{"deploy", "build", "invoke", "ls", "get", "rm", "versions", "alias", "logs", "version", "completion", "new"} {
		if c, _, err := root.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("command %s is missing", name)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := run(t, "http://127.0.0.1:1", "", "completion", sh)
		if code != 0 || !strings.Contains(out, "nimbus") || len(out) < 500 {
			t.Errorf("completion %s: code=%d err=%q len=%d", sh, code, errs, len(out))
		}
	}
	code, out, _ := run(t, "http://127.0.0.1:1", "", "deploy", "--help")
	if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--queue-timeout") {
		t.Errorf("deploy --help: code=%d out=%q", code, out)
	}
}
