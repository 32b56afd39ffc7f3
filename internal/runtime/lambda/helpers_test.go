package lambda

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Test programs, built once per test binary by TestMain.
var (
	goLambdaPath string // testdata/golambda: an aws-lambda-go bootstrap
	barePath     string // testdata/bare: the cold start baseline
	buildErr     error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nimbus-lambda-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The sandbox user runs the test programs in the benchmarks.
	_ = os.Chmod(dir, 0o755)
	goLambdaPath = filepath.Join(dir, "bootstrap")
	barePath = filepath.Join(dir, "bare")
	buildErr = errors.Join(
		goBuild(goLambdaPath, "./testdata/golambda"),
		goBuild(barePath, "./testdata/bare"),
	)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

func needBuilds(t testing.TB) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func needInterp(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
}

// logSink records the lines instances write.
type logSink struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct{ id, stream, text string }

func (s *logSink) Log(id, stream string, line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, logLine{id, stream, string(line)})
}

func (s *logSink) find(sub string) (logLine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l.text, sub) {
			return l, true
		}
	}
	return logLine{}, false
}

func newTestRuntime(t testing.TB) *Runtime {
	return New(Config{CacheDir: t.TempDir(), StartTimeout: 15 * time.Second, Logger: slog.New(slog.DiscardHandler)})
}

func testSpec(rt, fn string, logs runtime.LogSink) *runtime.Spec {
	return &runtime.Spec{
		Tenant: "default", Function: fn, Version: 3, Runtime: rt,
		MemoryMB: 256, Timeout: 20 * time.Second,
		Env:  map[string]string{"GREETING": "hi"},
		Logs: logs,
	}
}

// start prepares code and starts one instance, closed at the end of the test.
func start(t *testing.T, rt *Runtime, spec *runtime.Spec, code []byte) *instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tpl, err := rt.Prepare(ctx, spec, code)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() { _ = tpl.Close() })
	inst, err := tpl.NewInstance(ctx)
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	in := inst.(*instance)
	// The leak check below must see a live instance, or it proves nothing.
	if len(liveWithEnv("AWS_LAMBDA_RUNTIME_API="+in.api.addr())) == 0 {
		t.Fatalf("no live process found for instance at %s", in.api.addr())
	}
	t.Cleanup(func() {
		_ = in.Close()
		waitGone(t, in)
	})
	return in
}

type call struct {
	method, path, query string
	header              http.Header
	body                string
	raw                 bool
	timeout             time.Duration
	id                  string
}

func invoke(t *testing.T, in runtime.Instance, c call) (*httptest.ResponseRecorder, error) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.path == "" {
		c.path = "/"
	}
	if c.timeout == 0 {
		c.timeout = 20 * time.Second
	}
	h := c.header
	if h == nil {
		h = http.Header{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	if c.id == "" {
		c.id = fmt.Sprintf("inv-%d", time.Now().UnixNano())
	}
	req := &runtime.Request{
		InvocationID: c.id,
		Method:       c.method, ScriptName: "/fn/test", Path: c.path, RawQuery: c.query,
		Header: h, Host: "example.test", RemoteAddr: "192.0.2.7:5555",
		Body: strings.NewReader(c.body), ContentLength: int64(len(c.body)),
		Raw: c.raw, Trigger: "http", Deadline: dl,
	}
	if c.raw {
		req.Trigger = "async"
	}
	w := httptest.NewRecorder()
	err := in.Invoke(ctx, req, w)
	return w, err
}

func mustOK(t *testing.T, w *httptest.ResponseRecorder, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
}

func wantKind(t *testing.T, err error, k runtime.Kind, contains ...string) *runtime.Error {
	t.Helper()
	if runtime.KindOf(err) != k {
		t.Fatalf("error = %v (kind %v), want kind %v", err, runtime.KindOf(err), k)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not contain %q", err, c)
		}
	}
	var re *runtime.Error
	errors.As(err, &re)
	return re
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// liveWithEnv lists live (non-zombie) processes whose environment holds kv.
func liveWithEnv(kv string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !bytes.Contains(env, []byte("\x00"+kv+"\x00")) && !bytes.HasPrefix(env, []byte(kv+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join(p, "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		found = append(found, filepath.Base(p))
	}
	return found
}

// waitGone waits until no process of the instance is left.
func waitGone(t testing.TB, in *instance) {
	t.Helper()
	kv := "AWS_LAMBDA_RUNTIME_API=" + in.api.addr()
	eventually(t, 10*time.Second, func() error {
		if left := liveWithEnv(kv); len(left) > 0 {
			return fmt.Errorf("processes left: %v", left)
		}
		return nil
	})
}

func zipOf(t testing.TB, files map[string]string, mode os.FileMode) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
