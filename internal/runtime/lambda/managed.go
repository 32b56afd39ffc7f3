package lambda

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
)

// The bootstraps of the managed runtimes. Each speaks the Runtime API with
// its language's standard library only.
var (
	//go:embed bootstrap/bootstrap.py
	pythonBootstrap []byte
	//go:embed bootstrap/bootstrap.js
	nodeBootstrap []byte
)

// defaultHandler is the handler of a managed function that names none.
const defaultHandler = "handler.handler"

// handlerRE is "path/to/module.function": a relative module path and an identifier.
var handlerRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_/.-]*\.[A-Za-z_$][A-Za-z0-9_$]*$`)

// validateTimeout bounds the deploy-time syntax check.
const validateTimeout = 20 * time.Second

func (rt *Runtime) prepareManaged(ctx context.Context, t *template, digest string, code []byte) error {
	s := &t.spec
	handler := s.Handler
	if handler == "" {
		handler = defaultHandler
	}
	if !handlerRE.MatchString(handler) || strings.Contains(handler, "..") || strings.Contains(handler, "//") {
		return runtime.Errorf(runtime.BadCode, "function %s: handler %q is invalid: write it as file.function, "+
			"e.g. %q (a relative path without '..', then the function's name)", s.Function, handler, defaultHandler)
	}
	i := strings.LastIndexByte(handler, '.')
	module := handler[:i]

	var interp, boot, ext string
	var exts []string
	var err error
	switch s.Runtime {
	case runtime.Python3:
		interp, err = rt.interp.pythonPath()
		boot, ext, exts = "bootstrap.py", ".py", []string{".py"}
		// Python names nested modules with dots; files with slashes.
		module = strings.ReplaceAll(module, ".", "/")
		t.execEnv = "AWS_Lambda_python3"
	default:
		interp, err = rt.interp.nodePath()
		boot, ext, exts = "bootstrap.js", ".js", []string{".js", ".cjs", ".mjs"}
		t.execEnv = "AWS_Lambda_nodejs"
	}
	if err != nil {
		return fmt.Errorf("function %s: %s runtime unavailable: %w", s.Function, s.Runtime, err)
	}
	if filepath.IsAbs(module) {
		return runtime.Errorf(runtime.BadCode, "function %s: handler %q must name a file inside the code", s.Function, handler)
	}
	// A single uploaded file is stored under the handler's file name.
	dir, err := rt.unpack(digest, code, filepath.Base(module)+ext, s.Runtime)
	if err != nil {
		return fmt.Errorf("function %s: %w", s.Function, err)
	}
	var file string
	for _, e := range exts {
		p := filepath.Join(dir, filepath.FromSlash(module)+e)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			file = p
			break
		}
	}
	if file == "" {
		return runtime.Errorf(runtime.BadCode, "function %s: handler %q needs the file %s in the code, and it is not there",
			s.Function, handler, module+ext)
	}
	if err := rt.checkSyntax(ctx, s.Runtime, interp, file, dir); err != nil {
		return fmt.Errorf("function %s: %w", s.Function, err)
	}
	bootPath, err := rt.writeBootstrap(boot)
	if err != nil {
		return fmt.Errorf("function %s: %w", s.Function, err)
	}
	t.dir, t.handler = dir, handler
	if s.Runtime == runtime.Python3 {
		t.args = []string{interp, "-u", "-B", bootPath}
	} else {
		t.args = []string{interp}
		if s.MemoryMB > 0 {
			// Keep V8's heap inside the instance's memory, as AWS does.
			t.args = append(t.args, "--max-old-space-size="+strconv.Itoa(max(16, s.MemoryMB*85/100)))
		}
		t.args = append(t.args, bootPath)
	}
	return nil
}

// pythonCheck compiles a file without running it or writing bytecode, and
// prints a one-line description of a syntax error.
const pythonCheck = `import sys
try:
    src = open(sys.argv[1], 'rb').read()
    compile(src, sys.argv[2], 'exec')
except SyntaxError as e:
    print('%s: %s (%s line %s)' % (type(e).__name__, e.msg, sys.argv[2], e.lineno))
    sys.exit(1)
except Exception as e:
    print('%s: %s (%s)' % (type(e).__name__, e, sys.argv[2]))
    sys.exit(1)
`

// nodeLocation is the "file:line" line that opens a Node syntax error report.
var nodeLocation = regexp.MustCompile(`(?m)^(.+):(\d+)$`)

// checkSyntax refuses a handler file that does not compile, with the
// interpreter's own message.
func (rt *Runtime) checkSyntax(ctx context.Context, rtName, interp, file, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel()
	rel, _ := filepath.Rel(dir, file)
	var cmd *exec.Cmd
	if rtName == runtime.Python3 {
		cmd = exec.CommandContext(ctx, interp, "-B", "-I", "-c", pythonCheck, file, rel)
	} else {
		cmd = exec.CommandContext(ctx, interp, "--check", file)
	}
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("checking %s: %w", rel, ctx.Err())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("checking %s with %s: %w", rel, interp, err)
	}
	msg := strings.TrimSpace(string(out))
	if rtName == runtime.NodeJS {
		msg = nodeSyntaxMessage(msg, rel)
	}
	if len(msg) > 1024 {
		msg = msg[:1024] + "…"
	}
	return runtime.Errorf(runtime.BadCode, "%s does not compile: %s", rel, msg)
}

// nodeSyntaxMessage shortens `node --check` output to "SyntaxError: … (file line N)".
func nodeSyntaxMessage(out, rel string) string {
	line := ""
	if m := nodeLocation.FindStringSubmatch(out); m != nil {
		line = m[2]
	}
	for l := range strings.SplitSeq(out, "\n") {
		if i := strings.Index(l, "Error: "); i >= 0 && !strings.HasPrefix(strings.TrimSpace(l), "at ") {
			msg := strings.TrimSpace(l)
			if line != "" {
				msg += " (" + rel + " line " + line + ")"
			}
			return msg
		}
	}
	return out
}

var bootstrapMu sync.Mutex

// writeBootstrap puts an embedded bootstrap in the cache, under a directory
// named by its content, and returns its path.
func (rt *Runtime) writeBootstrap(name string) (string, error) {
	src := pythonBootstrap
	if name == "bootstrap.js" {
		src = nodeBootstrap
	}
	sum := sha256.Sum256(src)
	base, err := rt.codeRoot()
	if err != nil {
		return "", fmt.Errorf("code cache: %w", err)
	}
	dir := filepath.Join(base, "managed-bootstrap", hex.EncodeToString(sum[:8]))
	path := filepath.Join(dir, name)
	bootstrapMu.Lock()
	defer bootstrapMu.Unlock()
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, src) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("writing the %s bootstrap: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return "", fmt.Errorf("writing the %s bootstrap: %w", name, err)
	}
	_, werr := tmp.Write(src)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("writing the %s bootstrap: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("writing the %s bootstrap: %w", name, err)
	}
	return path, nil
}

// interpreters finds the python3 and node executables of a Runtime.
type interpreters struct {
	python, node string
	log          *slog.Logger
}

// reachable makes sure the sandbox user can run the interpreter at path;
// if not, the first of the system's own copies that it can run replaces it.
func (ip *interpreters) reachable(path string, system ...string) (string, error) {
	err := runnable(path)
	if err == nil {
		return path, nil
	}
	for _, alt := range system {
		if real, rerr := filepath.EvalSymlinks(alt); rerr == nil && runnable(real) == nil {
			ip.log.Info("interpreter not reachable by the sandbox user; using the system's", "interpreter", path, "instead", real, "reason", err)
			return real, nil
		}
	}
	return "", err
}

// runnable reports whether the sandbox user can execute the file at path.
func runnable(path string) error {
	if err := sandbox.Reachable(filepath.Dir(path)); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	// A root server runs instances as an unprivileged user.
	if os.Geteuid() == 0 && fi.Mode().Perm()&0o001 == 0 {
		return fmt.Errorf("%s is not executable by other users (mode %v)", path, fi.Mode().Perm())
	}
	return nil
}

func (ip *interpreters) pythonPath() (string, error) {
	name := ip.python
	if name == "" {
		name = "python3"
	}
	return resolveInterp("python:"+name, func() (string, error) {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("python interpreter: %w", err)
		}
		// Ask the interpreter where it lives: a shim (pyenv, asdf) needs the
		// server's environment, which functions do not get.
		ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, p, "-c", "import sys; print(sys.executable)").Output()
		if real := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(real) {
			p = real
		}
		return ip.reachable(p, "/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
	})
}

func (ip *interpreters) nodePath() (string, error) {
	name := ip.node
	if name == "" {
		name = "node"
	}
	return resolveInterp("node:"+name, func() (string, error) {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("node interpreter: %w", err)
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if p, err = filepath.Abs(p); err != nil {
			return "", err
		}
		return ip.reachable(p, "/usr/bin/node", "/usr/local/bin/node", "/bin/node")
	})
}

// resolved caches interpreter look-ups for the life of the process: asking
// a shim costs seconds on a loaded machine, and the answer does not change.
var resolved sync.Map // key -> *resolution

type resolution struct {
	once sync.Once
	path string
	err  error
}

func resolveInterp(key string, find func() (string, error)) (string, error) {
	v, _ := resolved.LoadOrStore(key, &resolution{})
	r := v.(*resolution)
	r.once.Do(func() { r.path, r.err = find() })
	return r.path, r.err
}
