package wasm

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Modules built from Go sources, each once per test binary, on first use.
var (
	helloMod      = &goModule{pkg: "../../../examples/hello", reactor: true}
	echoMod       = &goModule{pkg: "../../../examples/echo", reactor: true}
	guestMod      = &goModule{pkg: "./testdata/guest", reactor: true}
	cgiMod        = &goModule{pkg: "./testdata/cgi"}
	exampleCGIMod = &goModule{pkg: "../../../examples/cgi"}
	buildDir      string // holds the built modules
	sharedCache   string // compilation cache shared by most tests
)

type goModule struct {
	pkg     string
	reactor bool
	once    sync.Once
	code    []byte
	err     error
}

// get builds the module (GOOS=wasip1 GOARCH=wasm) the first time it is asked for.
func (m *goModule) get(t testing.TB) []byte {
	t.Helper()
	m.once.Do(func() {
		out := filepath.Join(buildDir, strings.NewReplacer("/", "_", ".", "_").Replace(m.pkg)+".wasm")
		args := []string{"build", "-o", out}
		if m.reactor {
			args = append(args, "-buildmode=c-shared")
		}
		cmd := exec.Command("go", append(args, m.pkg)...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		msg, err := cmd.CombinedOutput()
		if err == nil {
			m.code, err = os.ReadFile(out)
		}
		if err != nil {
			m.err = fmt.Errorf("building %s: %v\n%s", m.pkg, err, msg)
		}
	})
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.code
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nimbus-wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	buildDir = dir
	sharedCache = filepath.Join(dir, "cache")
	defer sharedSnap.close()
	return m.Run()
}

// sharedSnap is a snapshot template of the guest module, taken once per test
// binary (a snapshot costs a compile) and shared by the tests that need one.
var sharedSnap sharedTemplate

type sharedTemplate struct {
	once sync.Once
	r    *Runtime
	tpl  runtime.Template
	err  error
}

// sharedSnapSpec is the spec of sharedSnap's template.
var sharedSnapSpec = runtime.Spec{Function: "guest", Version: 1, Runtime: runtime.Wasm, MemoryMB: 48, Env: map[string]string{"GREETING": "hej"}, Snapshot: true}

func snapGuest(t testing.TB) runtime.Template {
	t.Helper()
	code := guestMod.get(t)
	sharedSnap.once.Do(func() {
		sharedSnap.r, sharedSnap.err = New(context.Background(), Config{CacheDir: sharedCache})
		if sharedSnap.err != nil {
			return
		}
		spec := sharedSnapSpec
		sharedSnap.tpl, sharedSnap.err = sharedSnap.r.Prepare(context.Background(), &spec, code)
		if sharedSnap.err == nil {
			sharedSnap.tpl.(*template).snapshotNow(context.Background())
		}
	})
	if sharedSnap.err != nil {
		t.Fatal(sharedSnap.err)
	}
	if !sharedSnap.tpl.(*template).snapshot {
		t.Fatal("the guest module was not snapshotted")
	}
	return sharedSnap.tpl
}

func (s *sharedTemplate) close() {
	if s.tpl != nil {
		_ = s.tpl.Close()
	}
	if s.r != nil {
		_ = s.r.Close(context.Background())
	}
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	r, err := New(context.Background(), Config{CacheDir: sharedCache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

func prepare(t testing.TB, r *Runtime, spec runtime.Spec, code []byte) runtime.Template {
	t.Helper()
	if spec.Function == "" {
		spec.Function = "fn"
	}
	if spec.Version == 0 {
		spec.Version = 1
	}
	if spec.Runtime == "" {
		spec.Runtime = runtime.Wasm
	}
	tpl, err := r.Prepare(context.Background(), &spec, code)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() { _ = tpl.Close() })
	// Snapshots are taken on the first instance, in the background; tests
	// take them at once.
	tpl.(*template).snapshotNow(context.Background())
	return tpl
}

func newInstance(t testing.TB, tpl runtime.Template) runtime.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in, err := tpl.NewInstance(ctx)
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// request builds a runtime.Request for target ("/path?query").
func request(method, target string, body []byte) *runtime.Request {
	path, query, _ := strings.Cut(target, "?")
	r := &runtime.Request{
		InvocationID:  "inv-" + strings.ReplaceAll(path, "/", "-"),
		Method:        method,
		ScriptName:    "/fn/test",
		Path:          path,
		RawQuery:      query,
		Header:        http.Header{},
		Host:          "127.0.0.1:8080",
		RemoteAddr:    "127.0.0.1:54321",
		ContentLength: int64(len(body)),
		Trigger:       "http",
	}
	if body != nil {
		r.Body = bytes.NewReader(body)
	}
	return r
}

// recorder is an http.ResponseWriter that notes whether anything was written.
type recorder struct {
	header  http.Header
	code    int
	body    bytes.Buffer
	touched bool
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.touched = true
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	r.touched = true
	return r.body.Write(p)
}

func invoke(t testing.TB, in runtime.Instance, req *runtime.Request, timeout time.Duration) (*recorder, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rec := newRecorder()
	err := in.Invoke(ctx, req, rec)
	return rec, err
}

func mustInvoke(t testing.TB, in runtime.Instance, req *runtime.Request) *recorder {
	t.Helper()
	rec, err := invoke(t, in, req, 20*time.Second)
	if err != nil {
		t.Fatalf("Invoke %s %s: %v", req.Method, req.Path, err)
	}
	return rec
}

func wantKind(t testing.TB, err error, kind runtime.Kind, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", kind)
	}
	if got := runtime.KindOf(err); got != kind {
		t.Fatalf("got kind %s (%v), want %s", got, err, kind)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not mention %q", err, contains)
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type logLine struct{ id, stream, line string }

// logSink records every line it receives.
type logSink struct {
	mu    sync.Mutex
	lines []logLine
}

func (s *logSink) Log(id, stream string, line []byte) {
	s.mu.Lock()
	s.lines = append(s.lines, logLine{id, stream, string(line)})
	s.mu.Unlock()
}

func (s *logSink) snapshot() []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logLine(nil), s.lines...)
}

func (s *logSink) has(want logLine) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if l == want {
			return true
		}
	}
	return false
}

// Hand-assembled modules.

func leb(v uint32) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func vec(items ...[]byte) []byte {
	b := leb(uint32(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func wname(s string) []byte { return append(leb(uint32(len(s))), s...) }

func section(id byte, content []byte) []byte {
	return append(append([]byte{id}, leb(uint32(len(content)))...), content...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// tinyModule assembles a module with types ()->() (0), ()->i32 (1) and
// (i32,i32)->i32 (2), the given function imports (module, name, type), one
// page of exported memory, and defined functions exported by name: a name
// ending in "!i32" has type 1 and returns 0, others have type 0.
func tinyModule(imports [][3]any, exports ...string) []byte {
	types := section(1, vec(
		[]byte{0x60, 0, 0},
		[]byte{0x60, 0, 1, 0x7f},
		[]byte{0x60, 2, 0x7f, 0x7f, 1, 0x7f},
	))
	var ims [][]byte
	for _, im := range imports {
		ims = append(ims, cat(wname(im[0].(string)), wname(im[1].(string)), []byte{0}, leb(uint32(im[2].(int)))))
	}
	var funcs, bodies, exps [][]byte
	exps = append(exps, cat(wname("memory"), []byte{2, 0}))
	for i, e := range exports {
		name, ret := strings.CutSuffix(e, "!i32")
		idx := uint32(len(imports) + i)
		if ret {
			funcs = append(funcs, []byte{1})
			bodies = append(bodies, []byte{4, 0, 0x41, 0, 0x0b}) // size, no locals, i32.const 0, end
		} else {
			funcs = append(funcs, []byte{0})
			bodies = append(bodies, []byte{2, 0, 0x0b}) // size, no locals, end
		}
		exps = append(exps, cat(wname(name), []byte{0}, leb(idx)))
	}
	mod := cat([]byte("\x00asm\x01\x00\x00\x00"), types)
	if len(ims) > 0 {
		mod = cat(mod, section(2, vec(ims...)))
	}
	mod = cat(mod, section(3, vec(funcs...)), section(5, vec([]byte{0, 1})), section(7, vec(exps...)))
	return cat(mod, section(10, vec(bodies...)))
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
