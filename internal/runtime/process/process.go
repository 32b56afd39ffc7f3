//go:build linux

// Package process owns the `process` runtime: any executable (a binary, or a
// script with its interpreter) that serves HTTP on $PORT — the contract of
// Cloud Run, Knative and OpenFaaS's http mode. Nimbus unpacks the code once
// per digest, starts each instance in a sandbox, waits until it answers, and
// reverse-proxies invocations to it, streaming bodies both ways.
//
// Readiness: an instance is ready when a TCP connection to 127.0.0.1:$PORT
// succeeds and a `HEAD /` (User-Agent nimbus-readiness) gets any HTTP answer;
// polls back off from 100µs to 1ms (to 20ms after the first second). The
// port is picked by binding :0 and releasing it, so another program may take
// it first; the instance then fails to start with its own error in the
// message, and the pool starts another.
package process

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/bundle"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// DefaultStartTimeout bounds an instance's start when neither Config nor the
// spec says otherwise.
const DefaultStartTimeout = 30 * time.Second

// SingleFileName is the name of single-file code when Entry names no file.
const SingleFileName = "function"

// Config configures the process runtime.
type Config struct {
	// CacheDir holds unpacked code, one directory per digest. It must be
	// reachable by the sandbox user; if it is not, a directory under
	// $TMPDIR is used instead (and a warning logged).
	CacheDir string
	Logger   *slog.Logger
	// StartTimeout bounds how long an instance may take to answer on $PORT
	// (default: the function's timeout, else 30s).
	StartTimeout time.Duration
	// Limits bound unpacked bundles (defaults: see bundle.Limits).
	Limits bundle.Limits
	// Pids bounds processes/threads per instance (default sandbox.DefaultPids).
	Pids int
}

// Runtime is the `process` runtime.
type Runtime struct {
	cfg Config
	log *slog.Logger

	rootOnce sync.Once
	root     string
	rootErr  error

	// spares bounds the templates' held processes (spare.go).
	spares spare.Set
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns the process runtime.
func New(cfg Config) *Runtime {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runtime{cfg: cfg, log: log.With("component", "runtime.process")}
}

func (r *Runtime) codeRoot() (string, error) {
	r.rootOnce.Do(func() {
		pref := r.cfg.CacheDir
		if pref == "" {
			pref = filepath.Join(os.TempDir(), "nimbus-process-cache")
		}
		r.root, r.rootErr = sandbox.CodeRoot(pref)
		if r.rootErr == nil && r.root != pref {
			r.log.Warn("cache dir is not reachable by the sandbox user; unpacking code elsewhere",
				"cache_dir", pref, "using", r.root, "reason", sandbox.Reachable(pref))
		}
	})
	return r.root, r.rootErr
}

// Prepare unpacks the code (cached by digest) and checks its entry command.
//
// Entry is split on spaces (no shell quoting). For single-file code the file
// is named after Entry's last word ("./server" → server, "python3 app.py" →
// app.py); with no Entry it is named "function" and run as ./function. A
// .zip or .tar.gz bundle needs an Entry.
func (r *Runtime) Prepare(ctx context.Context, spec *runtime.Spec, code []byte) (runtime.Template, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(code) == 0 {
		return nil, runtime.Errorf(runtime.BadCode, "process: the code is empty: upload an executable or a .zip/.tar.gz bundle")
	}
	args := strings.Fields(spec.Entry)
	name := SingleFileName
	if bundle.Kind(code) == "file" {
		if len(args) == 0 {
			args = []string{"./" + SingleFileName}
		}
		name = filepath.Base(args[len(args)-1])
		if name == "." || name == "/" || strings.HasPrefix(name, "-") {
			return nil, runtime.Errorf(runtime.BadCode, "process: entry %q does not end with the file name to give the uploaded file", spec.Entry)
		}
	} else if len(args) == 0 {
		return nil, runtime.Errorf(runtime.BadCode, "process: a %s bundle needs an entry command (for example \"./server\" or \"python3 app.py\")", bundle.Kind(code))
	}
	for k := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, runtime.Errorf(runtime.BadCode, "process: environment variable name %q is invalid", k)
		}
	}

	root, err := r.codeRoot()
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	digest := spec.Digest
	if digest == "" {
		sum := sha256.Sum256(code)
		digest = "sha256:" + hex.EncodeToString(sum[:])
	}
	dir, err := bundle.Cached(root, digest, code, name, r.cfg.Limits)
	if err != nil {
		return nil, err
	}
	if err := checkEntry(dir, args, envPath(spec.Env)); err != nil {
		return nil, err
	}

	start := r.cfg.StartTimeout
	if start <= 0 {
		start = spec.Timeout
	}
	if start <= 0 {
		start = DefaultStartTimeout
	}
	sp := *spec
	t := &Template{rt: r, spec: &sp, dir: dir, args: args, env: baseEnv(spec), startTimeout: start}
	t.spares = spare.NewSlot(&r.spares, t.buildSpare, func(in *Instance) { _ = in.Close() })
	t.spares.Fill()
	return t, nil
}

func envPath(env map[string]string) string {
	if p, ok := env["PATH"]; ok {
		return p
	}
	return sandbox.DefaultPath
}

// checkEntry checks that the entry's command exists (in the bundle, or on
// PATH for an interpreter) and, for "interpreter file", that the file is in
// the bundle.
func checkEntry(dir string, args []string, path string) error {
	cmd := args[0]
	inBundle := func(rel string) (os.FileInfo, error) {
		if filepath.IsAbs(rel) {
			return os.Stat(rel)
		}
		clean := filepath.Clean(rel)
		if clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, fmt.Errorf("outside the bundle")
		}
		return os.Stat(filepath.Join(dir, clean))
	}
	if strings.Contains(cmd, "/") {
		fi, err := inBundle(cmd)
		if err != nil {
			return runtime.Errorf(runtime.BadCode, "process: entry %q is not in the bundle: check the entry command and the bundle's layout", cmd)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return runtime.Errorf(runtime.BadCode, "process: entry %q is not an executable file (mode %v): mark it executable (chmod +x) before bundling", cmd, fi.Mode())
		}
		return nil
	}
	if fi, err := inBundle(cmd); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return nil
	}
	found := false
	for _, d := range filepath.SplitList(path) {
		if fi, err := os.Stat(filepath.Join(d, cmd)); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			found = true
			break
		}
	}
	if !found {
		return runtime.Errorf(runtime.BadCode, "process: entry command %q is neither an executable in the bundle nor on this machine's PATH (%s)", cmd, path)
	}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		if _, err := inBundle(args[1]); err != nil {
			return runtime.Errorf(runtime.BadCode, "process: entry %q runs %q, which is not in the bundle", strings.Join(args, " "), args[1])
		}
	}
	return nil
}

// baseEnv is the instance environment without PORT: the function's own
// variables, a default PATH, and names that say what is running.
func baseEnv(spec *runtime.Spec) []string {
	env := make([]string, 0, len(spec.Env)+4)
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		if k != "PORT" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+spec.Env[k])
	}
	if _, ok := spec.Env["PATH"]; !ok {
		env = append(env, "PATH="+sandbox.DefaultPath)
	}
	env = append(env, "NIMBUS_FUNCTION="+spec.Function, "NIMBUS_VERSION="+strconv.Itoa(spec.Version))
	return env
}

// Template starts instances of one prepared version.
type Template struct {
	rt           *Runtime
	spec         *runtime.Spec
	dir          string
	args         []string
	env          []string
	startTimeout time.Duration
	spares       *spare.Slot[*Instance]
}

// Dir is the unpacked code's directory.
func (t *Template) Dir() string { return t.dir }

// Close discards the template's spare. The unpacked code stays: it is
// shared by digest and cached for later versions and restarts.
func (t *Template) Close() error {
	t.spares.Close()
	return nil
}
