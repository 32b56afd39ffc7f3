package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/nimbusfn/nimbus/internal/stack"
)

// exportsOf compiles a module with wazero and returns its exported functions.
func exportsOf(t *testing.T, bin []byte) map[string]bool {
	t.Helper()
	ctx := t.Context()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	m, err := r.CompileModule(ctx, bin)
	if err != nil {
		t.Fatalf("compiling the built module: %v", err)
	}
	out := map[string]bool{}
	for name := range m.ExportedFunctions() {
		out[name] = true
	}
	return out
}

// TestNewGoProjectBuilds creates a Go project with `nimbus new`, builds it with
// `nimbus build` and checks that the result is a Nimbus reactor module.
func TestNewGoProjectBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go module")
	}
	t.Setenv("NIMBUS_BUILD_CACHE", t.TempDir())
	dir := filepath.Join(t.TempDir(), "greeter")
	code, out, errs := run(t, "http://127.0.0.1:1", "", "new", "greeter", "--lang", "go", "--dir", dir)
	if code != 0 || !strings.Contains(out, "nimbus deploy greeter --code "+dir) {
		t.Fatalf("new: code=%d out=%q err=%q", code, out, errs)
	}
	for _, f := range []string{"main.go", "go.mod", "README.md", "nimbus.yaml", "nimbus-sdk/go.mod", "nimbus-sdk/source.go"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("project lacks %s: %v", f, err)
		}
	}
	gomod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	for _, want := range []string{"module greeter", "require github.com/nimbusfn/nimbus/sdk/go v0.0.0", "replace github.com/nimbusfn/nimbus/sdk/go => ./nimbus-sdk"} {
		if !strings.Contains(string(gomod), want) {
			t.Errorf("go.mod lacks %q:\n%s", want, gomod)
		}
	}

	wasm := filepath.Join(t.TempDir(), "greeter.wasm")
	code, out, errs = run(t, "http://127.0.0.1:1", "", "build", dir, "-o", wasm)
	if code != 0 || !strings.Contains(out, "built "+wasm) {
		t.Fatalf("build: code=%d out=%q err=%q", code, out, errs)
	}
	if errs != "" {
		t.Errorf("build wrote to a non-terminal stderr: %q", errs)
	}
	bin, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	exp := exportsOf(t, bin)
	if !exp["nimbus_handle"] {
		t.Errorf("the built module does not export nimbus_handle; exports: %v", exp)
	}
	if exp["_start"] {
		t.Errorf("an SDK module must be a reactor (no _start); exports: %v", exp)
	}

	// A second build of the same sources comes from the cache.
	again, err := BuildGo(t.Context(), dir, nil)
	if err != nil || !bytes.Equal(again, bin) {
		t.Fatalf("cached build differs (err %v)", err)
	}
	src, err := inspectGo(dir)
	if err != nil || !src.reactor {
		t.Fatalf("inspectGo = %+v, %v; want a reactor", src, err)
	}
	key, _ := sourceHash("reactor", src.hashIn)
	if _, err := os.Stat(filepath.Join(os.Getenv("NIMBUS_BUILD_CACHE"), key+".wasm")); err != nil {
		t.Errorf("the build is not in the cache: %v", err)
	}

	// The project's stack file is valid and points at the project.
	st, err := stack.Load(filepath.Join(dir, "nimbus.yaml"))
	if err != nil || st.CodePath(st.Functions["greeter"]) != dir {
		t.Errorf("project stack file: %v", err)
	}
	// A second `new` refuses to overwrite it.
	code, _, errs = run(t, "http://127.0.0.1:1", "", "new", "greeter", "--lang", "go", "--dir", dir)
	if code != 1 || !strings.Contains(errs, "not empty") {
		t.Errorf("new into a non-empty dir: code=%d err=%q", code, errs)
	}
}

// TestBuildCommandModule builds a plain Go program (no SDK) into a command
// module for the wasm-cgi runtime, and checks the cache key follows the sources.
func TestBuildCommandModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go module")
	}
	cache := t.TempDir()
	t.Setenv("NIMBUS_BUILD_CACHE", cache)
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module cgi\n\ngo 1.26\n")
	write("main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"Content-Type: text/plain\\n\\nhi\") }\n")
	bin, err := BuildGo(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := exportsOf(t, bin)
	if !exp["_start"] || exp["nimbus_handle"] {
		t.Errorf("a plain program must be a command module; exports: %v", exp)
	}
	key1, err := sourceHash("command", []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	write("main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"Content-Type: text/plain\\n\\nho\") }\n")
	key2, _ := sourceHash("command", []string{dir})
	if key1 == key2 {
		t.Error("changing main.go did not change the cache key")
	}
	if _, err := os.Stat(filepath.Join(cache, key1+".wasm")); err != nil {
		t.Errorf("the first build is not cached: %v", err)
	}

	// A compile error is reported with the compiler's message.
	write("main.go", "package main\n\nfunc main() { undefinedThing() }\n")
	_, err = BuildGo(t.Context(), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "undefinedThing") {
		t.Errorf("build error = %v; want the compiler's message", err)
	}
	// Not a main package.
	write("main.go", "package lib\n")
	if _, err := BuildGo(t.Context(), dir, nil); err == nil || !strings.Contains(err.Error(), "not a main package") {
		t.Errorf("library build error = %v", err)
	}
}

func TestNewOtherLanguages(t *testing.T) {
	base := t.TempDir()
	for lang, file := range map[string]string{"python": "handler.py", "node": "handler.js"} {
		dir := filepath.Join(base, lang)
		code, _, errs := run(t, "http://127.0.0.1:1", "", "new", "fn-"+lang, "--lang", lang, "--dir", dir)
		if code != 0 {
			t.Fatalf("new --lang %s: code=%d err=%q", lang, code, errs)
		}
		src, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil || !strings.Contains(string(src), "statusCode") {
			t.Errorf("%s: %v %q", file, err, src)
		}
		readme, _ := os.ReadFile(filepath.Join(dir, "README.md"))
		if !strings.Contains(string(readme), "nimbus deploy fn-"+lang) {
			t.Errorf("README of %s lacks the deploy line: %q", lang, readme)
		}
		// The project packages as the right runtime.
		_, rt, err := packageCode(t.Context(), dir, "", nil)
		want := map[string]string{"python": "python3", "node": "nodejs"}[lang]
		if err != nil || rt != want {
			t.Errorf("packageCode(%s) = %q, %v; want %q", dir, rt, err, want)
		}
	}
	code, _, errs := run(t, "http://127.0.0.1:1", "", "new", "x", "--lang", "cobol", "--dir", filepath.Join(base, "x"))
	if code != 1 || !strings.Contains(errs, "--lang") {
		t.Errorf("bad lang: code=%d err=%q", code, errs)
	}
	code, _, errs = run(t, "http://127.0.0.1:1", "", "new", "Bad_Name")
	if code != 1 || !strings.Contains(errs, "invalid") {
		t.Errorf("bad name: code=%d err=%q", code, errs)
	}
}

func TestSpinner(t *testing.T) {
	var buf syncBuffer
	stop := startSpinner(&buf, "building x")
	stop()
	stop() // idempotent
	out := buf.String()
	if !strings.Contains(out, "building x") || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("spinner output = %q", out)
	}
	startSpinner(nil, "quiet")() // a nil writer shows nothing and does not block
}

// syncBuffer is a bytes.Buffer safe for one writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
