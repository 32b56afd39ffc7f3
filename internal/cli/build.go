package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// SDKImport is the import path of the Nimbus guest SDK for Go.
const SDKImport = "github.com/nimbusfn/nimbus/sdk/go"

func init() { register(newBuildCmd) }

func newBuildCmd(app *App) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "build PATH",
		Short: "Build a Go function directory into a WebAssembly module",
		Long: `Build a Go function directory into a WebAssembly module (GOOS=wasip1 GOARCH=wasm).

A package that imports the Nimbus SDK (` + SDKImport + `) is built as a reactor
for the wasm runtime (-buildmode=c-shared); any other main package as a plain
command module for the wasm-cgi runtime. The build runs in PATH, so its own
go.mod applies. Builds are cached by the hash of the sources.`,
		Example: `  nimbus build ./examples/hello               # writes hello.wasm
  nimbus build ./myfn -o /tmp/myfn.wasm`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if out == "" {
				abs, err := filepath.Abs(dir)
				if err != nil {
					return err
				}
				out = filepath.Base(abs) + ".wasm"
			}
			ctx, cancel := cmdContext(0)
			defer cancel()
			var progress io.Writer
			if isTerminal(app.Stderr) {
				progress = app.Stderr
			}
			wasm, err := BuildGo(ctx, dir, progress)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, wasm, 0o644); err != nil {
				return fmt.Errorf("writing the module: %w", err)
			}
			fmt.Fprintf(app.Stdout, "built %s (%s)\n", out, humanBytes(int64(len(wasm))))
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output file (default: DIR-NAME.wasm in the current directory)")
	return c
}

// goSource describes a Go function directory.
type goSource struct {
	dir     string
	reactor bool     // imports the SDK: build with -buildmode=c-shared
	hashIn  []string // directories whose sources make up the cache key
}

// inspectGo checks that dir holds a Go main package and finds out whether it
// uses the Nimbus SDK.
func inspectGo(dir string) (*goSource, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading Go function directory: %w", err)
	}
	src := &goSource{dir: dir, hashIn: []string{dir}}
	fset := token.NewFileSet()
	sawGo, sawMain := false, false
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ImportsOnly)
		if err != nil {
			return nil, fmt.Errorf("Go function %s: %w", dir, err)
		}
		sawGo = true
		if f.Name.Name == "main" {
			sawMain = true
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == SDKImport {
				src.reactor = true
			}
		}
	}
	if !sawGo {
		return nil, fmt.Errorf("%s holds no .go files: give a Go main package, a .wasm file, or a directory with handler.py/handler.js", dir)
	}
	if !sawMain {
		return nil, fmt.Errorf("%s is not a main package: a Go function is `package main` with `func main() { nimbus.Handle(h) }`", dir)
	}
	// The enclosing module's go.mod and every local replace target take part
	// in the build, so they take part in the cache key too.
	if modDir := findModuleRoot(dir); modDir != "" {
		if modDir != dir {
			src.hashIn = append(src.hashIn, modDir+string(filepath.Separator)+"go.mod")
		}
		for _, r := range localReplaces(filepath.Join(modDir, "go.mod")) {
			src.hashIn = append(src.hashIn, r)
		}
	}
	return src, nil
}

// findModuleRoot returns the directory of the go.mod that governs dir, or "".
func findModuleRoot(dir string) string {
	for d := dir; ; {
		if st, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && !st.IsDir() {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}

// localReplaces returns the absolute directories that go.mod's replace
// directives point at on the local file system.
func localReplaces(gomod string) []string {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return nil
	}
	var out []string
	base := filepath.Dir(gomod)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		i := strings.Index(line, "=>")
		if i < 0 {
			continue
		}
		fields := strings.Fields(line[i+2:])
		if len(fields) == 0 {
			continue
		}
		p := fields[0]
		if !(strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || filepath.IsAbs(p)) {
			continue
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		out = append(out, p)
	}
	return out
}

// sourceHash hashes the *.go, go.mod and go.sum files under the given paths
// (directories are walked, skipping hidden ones and testdata).
func sourceHash(mode string, paths []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "nimbus-build-v1\x00%s\x00", mode)
	// The toolchain takes part in the key: a different go binary, a new key.
	if gobin, err := exec.LookPath("go"); err == nil {
		if st, err := os.Stat(gobin); err == nil {
			fmt.Fprintf(h, "%s\x00%d\x00%d\x00", gobin, st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, root := range paths {
		st, err := os.Stat(root)
		if err != nil {
			continue // a replace target that does not exist: go build will say so
		}
		var files []string
		if !st.IsDir() {
			files = []string{root}
		} else {
			err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				n := d.Name()
				if d.IsDir() {
					if p != root && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "testdata") {
						return filepath.SkipDir
					}
					return nil
				}
				if strings.HasSuffix(n, ".go") || n == "go.mod" || n == "go.sum" {
					files = append(files, p)
				}
				return nil
			})
			if err != nil {
				return "", fmt.Errorf("hashing Go sources in %s: %w", root, err)
			}
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return "", fmt.Errorf("hashing Go sources: %w", err)
			}
			rel, _ := filepath.Rel(root, f)
			fmt.Fprintf(h, "%s\x00%s\x00%d\x00", root, rel, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildCacheDir is where built modules are kept, keyed by source hash.
func buildCacheDir() (string, error) {
	if d := os.Getenv("NIMBUS_BUILD_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "nimbus", "build"), nil
}

// BuildGo builds the Go function in dir for GOOS=wasip1 GOARCH=wasm and
// returns the module: a reactor (-buildmode=c-shared) if the package imports
// the Nimbus SDK, a plain command module otherwise. Builds are cached by a
// hash of the sources. progress, if not nil, receives a one-line spinner.
func BuildGo(ctx context.Context, dir string, progress io.Writer) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("Go function %s: %w", dir, err)
	}
	src, err := inspectGo(abs)
	if err != nil {
		return nil, err
	}
	mode := "command"
	var extra []string
	if src.reactor {
		mode = "reactor"
		extra = []string{"-buildmode=c-shared"}
	}
	return goBuild(ctx, abs, dir, mode, src.hashIn, []string{"GOOS=wasip1", "GOARCH=wasm"}, extra, progress)
}

// BuildNative builds the Go program in dir for this machine (linux, static),
// for the process and lambda runtimes: an HTTP server on $PORT, or an AWS
// Lambda bootstrap. Builds are cached like BuildGo's.
func BuildNative(ctx context.Context, dir string, progress io.Writer) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("Go program %s: %w", dir, err)
	}
	src, err := inspectGo(abs)
	if err != nil {
		return nil, err
	}
	return goBuild(ctx, abs, dir, "native-"+goruntime.GOOS+"-"+goruntime.GOARCH, src.hashIn,
		[]string{"GOOS=" + goruntime.GOOS, "GOARCH=" + goruntime.GOARCH}, nil, progress)
}

// goBuild runs go build in abs with env and extra flags, cached by mode and
// the hash of hashIn.
func goBuild(ctx context.Context, abs, dir, mode string, hashIn []string, env, extra []string, progress io.Writer) ([]byte, error) {
	key, err := sourceHash(mode, hashIn)
	if err != nil {
		return nil, err
	}
	cacheDir, cacheErr := buildCacheDir()
	cached := ""
	if cacheErr == nil {
		ext := ".wasm"
		if strings.HasPrefix(mode, "native") {
			ext = ".bin"
		}
		cached = filepath.Join(cacheDir, key+ext)
		if data, err := os.ReadFile(cached); err == nil && len(data) > 0 {
			return data, nil
		}
	}

	tmp, err := os.MkdirTemp("", "nimbus-build-*")
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "fn.out")
	args := append([]string{"build", "-trimpath", "-o", out}, extra...)
	args = append(args, ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = abs
	cmd.Env = append(append(os.Environ(), env...), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr

	stop := startSpinner(progress, "building "+dir+" ("+mode+")")
	err = cmd.Run()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("building %s: %w", dir, ctx.Err())
		}
		return nil, fmt.Errorf("building %s with %s go %s failed: %w\n%s",
			dir, strings.Join(env, " "), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", dir, err)
	}
	if cached != "" {
		// Best effort: a cache that cannot be written only costs a rebuild.
		if err := os.MkdirAll(cacheDir, 0o755); err == nil {
			if f, err := os.CreateTemp(cacheDir, ".tmp-*"); err == nil {
				_, werr := f.Write(data)
				cerr := f.Close()
				if werr == nil && cerr == nil {
					_ = os.Rename(f.Name(), cached)
				}
				_ = os.Remove(f.Name())
			}
		}
	}
	return data, nil
}

// isWasm reports whether data starts with the WebAssembly magic and version 1.
func isWasm(data []byte) bool {
	return len(data) >= 8 && bytes.Equal(data[:8], []byte{0, 'a', 's', 'm', 1, 0, 0, 0})
}

// startSpinner shows "⠋ msg (3s)" on w until the returned stop is called;
// with a nil w it does nothing. stop clears the line and waits for the
// spinner's goroutine.
func startSpinner(w io.Writer, msg string) (stop func()) {
	if w == nil {
		return func() {}
	}
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, "\r%s %s (%ds)", frames[i%len(frames)], msg, int(time.Since(start).Seconds()))
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// humanBytes formats n as 1.2 MB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
