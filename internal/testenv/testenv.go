// Package testenv starts a real Nimbus for tests (embedded JetStream in a temp
// dir, a free port) in one line, builds guest modules from Go sources, and
// waits on conditions with deadlines instead of sleeping.
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
)

// Env is a running server for one test.
type Env struct {
	*server.Server
	URL string
	t   testing.TB
}

// Start runs a server until the test ends. opts adjust its Config.
func Start(t testing.TB, opts ...func(*server.Config)) *Env {
	t.Helper()
	cfg := server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Node: "test", CacheDir: SharedCacheDir()}
	if os.Getenv("NIMBUS_TEST_LOG") == "" {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig runs a server with exactly cfg until the test ends.
func StartConfig(t testing.TB, cfg server.Config) *Env {
	t.Helper()
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("starting nimbus: %v", err)
	}
	e := &Env{Server: s, URL: s.URL(), t: t}
	t.Cleanup(func() { e.Stop() })
	return e
}

// SharedCacheDir is a compilation cache shared by every test server on the
// machine: compiled code is keyed by the module's hash, so sharing is safe and
// saves each test a full compile.
func SharedCacheDir() string { return filepath.Join(os.TempDir(), "nimbus-test-cache") }

// Stop stops the server (idempotent).
func (e *Env) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = e.Server.Stop(ctx)
}

// Deploy uploads code as a new version of name in one multipart request and
// fails the test unless it is accepted.
func (e *Env) Deploy(name string, code []byte, cfg registry.Config) *registry.Version {
	e.t.Helper()
	status, body := e.DeployRaw(name, code, cfg)
	if status != http.StatusCreated {
		e.t.Fatalf("deploy %s: %d %s", name, status, body)
	}
	var v registry.Version
	if err := json.Unmarshal(body, &v); err != nil {
		e.t.Fatalf("deploy %s: %v", name, err)
	}
	return &v
}

// DeployRaw deploys and returns the status and body whatever they are.
func (e *Env) DeployRaw(name string, code []byte, cfg registry.Config) (int, []byte) {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("name", name)
	cb, _ := json.Marshal(cfg)
	_ = mw.WriteField("config", string(cb))
	fw, _ := mw.CreateFormFile("code", "code")
	_, _ = fw.Write(code)
	_ = mw.Close()
	resp, err := http.Post(e.URL+"/api/v1/functions", mw.FormDataContentType(), &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Do sends a request to the server and returns the response with its body read.
func (e *Env) Do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// Get is Do("GET", path, nil).
func (e *Env) Get(path string) (*http.Response, []byte) {
	e.t.Helper()
	return e.Do(http.MethodGet, path, nil)
}

// Eventually calls f until it returns nil or timeout passes, then fails the
// test with f's last error.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// RepoRoot is the repository root (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildMu sync.Mutex
	built   = map[string][]byte{}
)

// Reactor and Command are the two kinds of Go wasm build.
const (
	Reactor = true  // SDK functions: -buildmode=c-shared
	Command = false // CGI functions: plain command modules
)

// BuildWasm builds the Go main package in dir (relative to the repository root,
// or absolute) for wasip1, once per test binary, and caches the result on disk
// by a hash of its sources so other test binaries reuse it.
func BuildWasm(t testing.TB, dir string, reactor bool) []byte {
	t.Helper()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(RepoRoot(), dir)
	}
	key := fmt.Sprintf("%s|%v", dir, reactor)
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := built[key]; ok {
		return b
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s|%v|%s\n", dir, reactor, runtime.Version())
	hashTree(h, dir)
	hashTree(h, filepath.Join(RepoRoot(), "sdk", "go"))
	sum := hex.EncodeToString(h.Sum(nil))[:24]
	cache := filepath.Join(os.TempDir(), "nimbus-test-wasm")
	out := filepath.Join(cache, sum+".wasm")
	if b, err := os.ReadFile(out); err == nil {
		built[key] = b
		return b
	}
	_ = os.MkdirAll(cache, 0o755)
	tmp := out + fmt.Sprintf(".%d.tmp", os.Getpid())
	args := []string{"build", "-trimpath", "-o", tmp}
	if reactor {
		args = append(args, "-buildmode=c-shared")
	}
	args = append(args, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if outp, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s for wasip1: %v\n%s", dir, err, outp)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	built[key] = b
	return b
}

func hashTree(h io.Writer, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "go.mod") {
			b, _ := os.ReadFile(p)
			fmt.Fprintf(h, "%s %d\n", p, len(b))
			h.Write(b)
		}
		return nil
	})
}
