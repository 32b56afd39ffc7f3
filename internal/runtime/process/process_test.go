//go:build linux

package process

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/bundle"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
)

var (
	serverOnce sync.Once
	serverBin  []byte
	serverErr  error
)

// testServer builds testdata/server once per test binary.
func testServer(t testing.TB) []byte {
	t.Helper()
	serverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nimbus-process-test-")
		if err != nil {
			serverErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "server")
		cmd := exec.Command("go", "build", "-o", out, "./testdata/server")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("go build: %v\n%s", err, b)
			return
		}
		serverBin, serverErr = os.ReadFile(out)
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverBin
}

type logLine struct{ id, stream, line string }

type sink struct {
	mu    sync.Mutex
	lines []logLine
}

func (s *sink) Log(id, stream string, line []byte) {
	s.mu.Lock()
	s.lines = append(s.lines, logLine{id, stream, string(line)})
	s.mu.Unlock()
}

func (s *sink) snapshot() []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logLine(nil), s.lines...)
}

func digest(code []byte) string {
	sum := sha256.Sum256(code)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// cacheDir is a temp dir the sandbox user can reach (t.TempDir is 0700).
func cacheDir(t testing.TB) string {
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return filepath.Join(d, "cache")
}

func newRuntime(t testing.TB) *Runtime {
	return New(Config{CacheDir: cacheDir(t), StartTimeout: 20 * time.Second, Pids: 64})
}

func prepare(t testing.TB, rt *Runtime, code []byte, entry string, mod func(*runtime.Spec)) (runtime.Template, *sink) {
	t.Helper()
	s := &sink{}
	spec := &runtime.Spec{Tenant: "default", Function: "fn", Version: 1, Runtime: runtime.Process,
		Digest: digest(code), Entry: entry, Concurrency: 1, Timeout: 10 * time.Second,
		Env: map[string]string{"GREETING": "hi"}, Logs: s}
	if mod != nil {
		mod(spec)
	}
	tpl, err := rt.Prepare(context.Background(), spec, code)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() { _ = tpl.Close() }) // its spare
	return tpl, s
}

func start(t testing.TB, tpl runtime.Template) *Instance {
	t.Helper()
	inst, err := tpl.NewInstance(context.Background())
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	in := inst.(*Instance)
	t.Cleanup(func() { in.Close() })
	return in
}

func call(t testing.TB, in *Instance, ctx context.Context, method, path string, body []byte) (*httptest.ResponseRecorder, error) {
	t.Helper()
	rec := httptest.NewRecorder()
	p, q, _ := strings.Cut(path, "?")
	req := &runtime.Request{InvocationID: "inv-" + strconv.FormatInt(time.Now().UnixNano(), 36), Method: method, ScriptName: "/fn/fn",
		Path: p, RawQuery: q, Header: http.Header{"X-Test": {"1"}, "Connection": {"X-Drop"}, "X-Drop": {"1"}},
		Host: "example.test", RemoteAddr: "192.0.2.7:5555", Body: bytes.NewReader(body), ContentLength: int64(len(body))}
	return rec, in.Invoke(ctx, req, rec)
}

// groupAlive lists live (non-zombie) processes in the instance's process group.
func groupAlive(pgid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ourCgroups lists instance cgroups this test process left behind.
func ourCgroups() []string {
	var out []string
	for _, pat := range []string{"/sys/fs/cgroup/*/nimbus/i-%d-*", "/sys/fs/cgroup/*/*/*/nimbus/i-%d-*", "/sys/fs/cgroup/nimbus/i-%d-*"} {
		m, _ := filepath.Glob(fmt.Sprintf(pat, os.Getpid()))
		out = append(out, m...)
	}
	// Spares made ahead for the next start are no instance's leftovers:
	// the sandbox's cgroups made ahead, and the cgroups of templates' spare
	// instances, whose processes are all held before their first
	// instruction (state t).
	spares := sandbox.SpareCgroups()
	return slices.DeleteFunc(out, func(d string) bool { return slices.Contains(spares, d) || heldOnly(d) })
}

// heldOnly reports whether cgroup dir d holds processes, all of them held
// stopped (traced, state t).
func heldOnly(d string) bool {
	b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	pids := strings.Fields(string(b))
	if err != nil || len(pids) == 0 {
		return false
	}
	for _, pid := range pids {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return false
		}
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:])); len(f) == 0 || f[0] != "t" {
			return false
		}
	}
	return true
}

// closeAndCheck closes the instance and checks nothing of it is left.
func closeAndCheck(t *testing.T, in *Instance) {
	t.Helper()
	pid := in.Pid()
	if err := in.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := groupAlive(pid); len(left) > 0 {
		t.Errorf("processes %v left after Close", left)
	}
	if cg := ourCgroups(); len(cg) > 0 {
		t.Errorf("cgroups left after Close: %v", cg)
	}
}

func wantKind(t *testing.T, err error, k runtime.Kind, contains ...string) {
	t.Helper()
	if runtime.KindOf(err) != k {
		t.Fatalf("want %v error, got %v (%v)", k, runtime.KindOf(err), err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Fatalf("error %q does not say %q", err, c)
		}
	}
}

func TestSingleFileServer(t *testing.T) {
	rt := newRuntime(t)
	tpl, logs := prepare(t, rt, testServer(t), "", nil)
	in := start(t, tpl)

	rec, err := call(t, in, context.Background(), "GET", "/hello?x=1", nil)
	if err != nil || rec.Code != 200 || rec.Body.String() != "hello from GET /hello?x=1" {
		t.Fatalf("GET: %v %d %q", err, rec.Code, rec.Body.String())
	}

	rec, err = call(t, in, context.Background(), "GET", "/info", nil)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Env     []string
		UID     int
		Headers http.Header
		Host    string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil {
		t.Fatalf("info: %v %s", err, rec.Body.String())
	}
	env := strings.Join(info.Env, "\n")
	for _, want := range []string{"GREETING=hi", "PORT=", "HOME=", "TMPDIR=", "NIMBUS_FUNCTION=fn"} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	if os.Geteuid() == 0 && info.UID != 65534 {
		t.Errorf("uid %d, want 65534", info.UID)
	}
	h := info.Headers
	if h.Get("X-Test") != "1" || h.Get("X-Drop") != "" || h.Get("X-Forwarded-For") != "192.0.2.7" ||
		h.Get("X-Forwarded-Host") != "example.test" || h.Get("X-Forwarded-Proto") != "http" ||
		h.Get("X-Forwarded-Prefix") != "/fn/fn" || !strings.HasPrefix(h.Get("X-Nimbus-Invocation-Id"), "inv-") || info.Host != "example.test" {
		t.Errorf("forwarded headers wrong: %v host=%q", h, info.Host)
	}

	// Logs carry the invocation id, exactly, at concurrency 1.
	req := &runtime.Request{InvocationID: "inv-logs", Method: "GET", Path: "/log", Header: http.Header{}, ContentLength: 0}
	if err := in.Invoke(context.Background(), req, httptest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	var tagged int
	for _, l := range logs.snapshot() {
		if strings.HasSuffix(l.line, " inv-logs") {
			if l.id != "inv-logs" {
				t.Errorf("line %q tagged %q", l.line, l.id)
			}
			tagged++
		}
		if strings.HasPrefix(l.line, "listening on") && l.id != "" {
			t.Errorf("start-up line tagged %q", l.id)
		}
	}
	if tagged != 6 {
		t.Errorf("%d of 6 log lines seen: %v", tagged, logs.snapshot())
	}
	closeAndCheck(t, in)
}

func tarGz(t testing.TB, files map[string][]byte) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func zipOf(t testing.TB, files map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o755)
		w, _ := zw.CreateHeader(h)
		w.Write(b)
	}
	zw.Close()
	return buf.Bytes()
}

func TestBundles(t *testing.T) {
	bin := testServer(t)
	files := map[string][]byte{"bin/server": bin, "static/readme.txt": []byte("hi")}
	for _, tc := range []struct {
		name, entry string
		code        []byte
	}{
		{"tar.gz", "./bin/server", tarGz(t, files)},
		{"zip", "bin/server", zipOf(t, files)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl, _ := prepare(t, newRuntime(t), tc.code, tc.entry, nil)
			in := start(t, tpl)
			rec, err := call(t, in, context.Background(), "POST", "/", []byte("x"))
			if err != nil || rec.Body.String() != "hello from POST /" {
				t.Fatalf("%v %q", err, rec.Body.String())
			}
			closeAndCheck(t, in)
		})
	}
}

func TestInterpreterScript(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	script := []byte(`import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("py " + self.path + " " + os.environ.get("GREETING", "")).encode()
        print("handling", self.headers.get("X-Nimbus-Invocation-Id"), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`)
	tpl, logs := prepare(t, newRuntime(t), script, "python3 app.py", nil)
	in := start(t, tpl)
	rec, err := call(t, in, context.Background(), "GET", "/x", nil)
	if err != nil || rec.Body.String() != "py /x hi" {
		t.Fatalf("%v %q", err, rec.Body.String())
	}
	found := false
	for _, l := range logs.snapshot() {
		if strings.HasPrefix(l.line, "handling inv-") && l.id != "" && strings.HasSuffix(l.line, l.id) {
			found = true
		}
	}
	if !found {
		t.Errorf("python's log line not tagged: %v", logs.snapshot())
	}
	closeAndCheck(t, in)
}

func TestStreaming(t *testing.T) {
	tpl, _ := prepare(t, newRuntime(t), testServer(t), "", nil)
	in := start(t, tpl)

	t.Run("20MB round trip", func(t *testing.T) {
		body := make([]byte, 20<<20)
		rand.Read(body)
		// Through a real HTTP server so that both sides stream.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req := &runtime.Request{InvocationID: "big", Method: r.Method, Path: r.URL.Path, Header: r.Header, Body: r.Body, ContentLength: r.ContentLength, RemoteAddr: r.RemoteAddr, Host: r.Host}
			if err := in.Invoke(r.Context(), req, w); err != nil {
				t.Errorf("Invoke: %v", err)
			}
		}))
		defer srv.Close()
		resp, err := http.Post(srv.URL+"/echo", "application/octet-stream", io.MultiReader(bytes.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("echoed %d bytes (want %d), err %v", len(got), len(body), err)
		}
	})

	t.Run("full duplex", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.NewResponseController(w).EnableFullDuplex()
			req := &runtime.Request{InvocationID: "duplex", Method: r.Method, Path: r.URL.Path, Header: r.Header, Body: r.Body, ContentLength: -1}
			if err := in.Invoke(r.Context(), req, w); err != nil {
				t.Errorf("Invoke: %v", err)
			}
		}))
		defer srv.Close()
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", srv.URL+"/duplex", pr)
		go func() { pw.Write([]byte("1\n")) }()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for i := 1; i <= 3; i++ {
			// Each answer must arrive before the next line is sent.
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("pong %d\n", i) {
				t.Fatalf("line %d: %q %v", i, line, err)
			}
			if i < 3 {
				pw.Write([]byte(strconv.Itoa(i+1) + "\n"))
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("after the last line: %q %v", rest, err)
		}
	})

	closeAndCheck(t, in)
}

func TestConcurrency(t *testing.T) {
	tpl, _ := prepare(t, newRuntime(t), testServer(t), "", func(s *runtime.Spec) { s.Concurrency = 16 })
	in := start(t, tpl)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := call(t, in, context.Background(), "GET", "/sleep?d=50ms&i="+strconv.Itoa(i), nil)
			if err == nil && rec.Body.String() != "slept" {
				err = fmt.Errorf("body %q", rec.Body.String())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	closeAndCheck(t, in)
}

func script(s string) []byte { return []byte("#!/bin/sh\n" + s) }

func TestStartFailures(t *testing.T) {
	t.Run("exits at start", func(t *testing.T) {
		tpl, _ := prepare(t, newRuntime(t), script("echo 'config missing' >&2\nexit 3\n"), "", nil)
		_, err := tpl.NewInstance(context.Background())
		wantKind(t, err, runtime.StartFailed, "exit status 3", "config missing")
		if cg := ourCgroups(); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
	})
	t.Run("never listens", func(t *testing.T) {
		rt := New(Config{CacheDir: cacheDir(t), StartTimeout: 300 * time.Millisecond})
		tpl, _ := prepare(t, rt, script("echo waiting\nexec sleep 1000\n"), "", nil)
		_, err := tpl.NewInstance(context.Background())
		wantKind(t, err, runtime.StartFailed, "did not listen on $PORT", "300ms")
		if cg := ourCgroups(); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
	})
}

func TestHostile(t *testing.T) {
	rt := newRuntime(t)
	t.Run("crash mid-request", func(t *testing.T) {
		tpl, _ := prepare(t, rt, testServer(t), "", nil)
		in := start(t, tpl)
		_, err := call(t, in, context.Background(), "GET", "/crash", nil)
		wantKind(t, err, runtime.Crashed, "process exited: exit status 2", "about to crash")
		closeAndCheck(t, in)
	})
	t.Run("memory hog", func(t *testing.T) {
		tpl, _ := prepare(t, rt, testServer(t), "", func(s *runtime.Spec) { s.MemoryMB = 64 })
		in := start(t, tpl)
		_, err := call(t, in, context.Background(), "GET", "/oom", nil)
		wantKind(t, err, runtime.OutOfMemory, "out of memory (limit 64 MB)")
		closeAndCheck(t, in)
	})
	t.Run("timeout kills the tree", func(t *testing.T) {
		tpl, _ := prepare(t, rt, testServer(t), "", func(s *runtime.Spec) { s.Timeout = 500 * time.Millisecond })
		in := start(t, tpl)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := call(t, in, ctx, "GET", "/sleep?d=1h", nil)
		wantKind(t, err, runtime.TimedOut, "timeout of 500ms")
		if n := len(groupAlive(in.Pid())); n < 2 {
			t.Fatalf("expected the server and its grandchild sleeping, found %d processes", n)
		}
		closeAndCheck(t, in)
	})
	t.Run("fork bomb", func(t *testing.T) {
		tpl, _ := prepare(t, rt, testServer(t), "", nil)
		in := start(t, tpl)
		if _, err := call(t, in, context.Background(), "GET", "/forkbomb", nil); err != nil {
			t.Fatal(err)
		}
		// Let it hit the limit, then check it stayed under it.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && len(groupAlive(in.Pid())) < 40 {
			time.Sleep(10 * time.Millisecond)
		}
		if n := len(groupAlive(in.Pid())); n > 64 {
			t.Fatalf("%d processes, over the pids limit of 64", n)
		}
		closeAndCheck(t, in)
		// Other instances keep working.
		in2 := start(t, tpl)
		if rec, err := call(t, in2, context.Background(), "GET", "/", nil); err != nil || rec.Code != 200 {
			t.Fatalf("after fork bomb: %v", err)
		}
		closeAndCheck(t, in2)
	})
}

func TestBadCode(t *testing.T) {
	rt := newRuntime(t)
	spec := func(entry string) *runtime.Spec {
		return &runtime.Spec{Function: "fn", Version: 1, Runtime: runtime.Process, Entry: entry}
	}
	var link bytes.Buffer
	gz := gzip.NewWriter(&link)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "server", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	tw.Close()
	gz.Close()
	bomb := tarGz(t, map[string][]byte{"server": make([]byte, 4<<20)})
	small := New(Config{CacheDir: cacheDir(t), Limits: bundle.Limits{MaxBytes: 1 << 20}})
	for _, tc := range []struct {
		name  string
		rt    *Runtime
		code  []byte
		entry string
		want  string
	}{
		{"dotdot", rt, tarGz(t, map[string][]byte{"../evil": []byte("x")}), "./evil", "'..'"},
		{"symlink outside", rt, link.Bytes(), "./server", "absolute path"},
		{"too large", small, bomb, "./server", "more than 1048576 bytes"},
		{"missing entry", rt, tarGz(t, map[string][]byte{"srv": []byte("x")}), "./server", "not in the bundle"},
		{"archive without entry", rt, tarGz(t, map[string][]byte{"srv": []byte("x")}), "", "needs an entry command"},
		{"unknown interpreter", rt, []byte("x"), "no-such-interpreter app.py", "neither an executable"},
		{"empty", rt, nil, "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(tc.entry)
			s.Digest = digest(tc.code)
			_, err := tc.rt.Prepare(context.Background(), s, tc.code)
			wantKind(t, err, runtime.BadCode, tc.want)
		})
	}
}
