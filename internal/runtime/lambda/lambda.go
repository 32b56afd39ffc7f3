// Package lambda owns the AWS Lambda compatible runtimes: `lambda` (a custom
// runtime `bootstrap` executable, such as one built with aws-lambda-go) and the
// managed `python3` and `nodejs` runtimes, whose bootstraps Nimbus ships.
//
// Each instance is one bootstrap process with its own Runtime API server
// (/2018-06-01/runtime/…) on a loopback port named by AWS_LAMBDA_RUNTIME_API.
// An HTTP invocation reaches the function as an API Gateway HTTP API (v2.0)
// event, a raw event as its JSON; the answer maps back the way API Gateway
// maps it. One invocation runs at a time per instance.
package lambda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// Config configures the Lambda runtimes. Zero values mean the documented defaults.
type Config struct {
	// CacheDir holds unpacked code (by digest) and the managed bootstraps.
	// Default: a "nimbus-lambda" directory under os.TempDir().
	CacheDir string
	Logger   *slog.Logger
	// Python and Node are the interpreters of the managed runtimes. Default:
	// python3 and node from PATH (shims such as pyenv's are resolved to the
	// real interpreter, since functions run without PATH lookups of the server).
	Python, Node string
	// StartTimeout bounds a cold start: the bootstrap must ask for its first
	// event within it. Default 10 s (AWS's init limit).
	StartTimeout time.Duration
	// MaxCodeBytes and MaxCodeFiles bound an unpacked bundle. Defaults 250 MB
	// (AWS's unzipped limit) and 10000 files.
	MaxCodeBytes int64
	MaxCodeFiles int
	// Pids caps the processes and threads of one instance. Default 256.
	Pids int
}

// Runtime prepares and runs lambda, python3 and nodejs functions.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	interp interpreters
	// codeRoot is where code and bootstraps are unpacked: a directory the
	// sandbox user can reach.
	codeRoot func() (string, error)
	// spares bounds the templates' spare instances (see spare.go); it is
	// off once processes turned out not to be holdable.
	spares spare.Set
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns a Runtime. It starts nothing; interpreters are looked up on first use.
func New(cfg Config) *Runtime {
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(os.TempDir(), "nimbus-lambda")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.MaxCodeBytes <= 0 {
		cfg.MaxCodeBytes = 250 << 20
	}
	if cfg.MaxCodeFiles <= 0 {
		cfg.MaxCodeFiles = 10000
	}
	if cfg.Pids <= 0 {
		cfg.Pids = 256
	}
	log := cfg.Logger.With("component", "runtime.lambda")
	rt := &Runtime{cfg: cfg, log: log, interp: interpreters{python: cfg.Python, node: cfg.Node, log: log}}
	rt.codeRoot = sync.OnceValues(func() (string, error) {
		root, err := sandbox.CodeRoot(filepath.Join(cfg.CacheDir, "code"))
		if err == nil && root != filepath.Join(cfg.CacheDir, "code") {
			log.Info("code cache moved where the sandbox user can read it", "dir", root)
		}
		return root, err
	})
	return rt
}

// defaultTimeout applies when a spec and a request name no deadline.
const defaultTimeout = 30 * time.Second

// Prepare unpacks the code (cached by digest) and checks it: a lambda function
// must hold an executable named bootstrap; a managed function its handler file,
// which must compile.
func (rt *Runtime) Prepare(ctx context.Context, spec *runtime.Spec, code []byte) (runtime.Template, error) {
	if spec == nil {
		return nil, fmt.Errorf("lambda runtime: no spec")
	}
	s := *spec
	if len(code) == 0 {
		return nil, runtime.Errorf(runtime.BadCode, "function %s: the code is empty", s.Function)
	}
	digest := s.Digest
	if digest == "" {
		sum := sha256.Sum256(code)
		digest = "sha256:" + hex.EncodeToString(sum[:])
	}
	t := &template{rt: rt, spec: s}
	switch s.Runtime {
	case runtime.Lambda:
		dir, err := rt.unpack(digest, code, "bootstrap", "lambda")
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", s.Function, err)
		}
		boot := filepath.Join(dir, "bootstrap")
		fi, err := os.Stat(boot)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil, runtime.Errorf(runtime.BadCode, "function %s: the code has no executable named bootstrap at its top level; "+
				"ship the bootstrap binary alone, or in a .zip or .tar.gz with bootstrap at the root", s.Function)
		}
		if fi.Mode().Perm()&0o111 != 0o111 {
			if err := os.Chmod(boot, fi.Mode().Perm()|0o555); err != nil {
				return nil, fmt.Errorf("function %s: making bootstrap executable: %w", s.Function, err)
			}
		}
		t.dir, t.args, t.execEnv = dir, []string{boot}, "AWS_Lambda_provided"
	case runtime.Python3, runtime.NodeJS:
		if err := rt.prepareManaged(ctx, t, digest, code); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("lambda runtime cannot run runtime %q", s.Runtime)
	}
	t.spares = spare.NewSlot(&rt.spares, t.buildSpare, func(in *instance) { _ = in.Close() })
	t.spares.Fill()
	return t, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// unpack places the code in the cache and returns its directory. kind and
// name key the cache together with the digest: the same bytes unpacked as a
// different single file are a different tree.
func (rt *Runtime) unpack(digest string, code []byte, name, kind string) (string, error) {
	base, err := rt.codeRoot()
	if err != nil {
		return "", fmt.Errorf("code cache: %w", err)
	}
	root := filepath.Join(base, kind+"-"+unsafeName.ReplaceAllString(name, "_"))
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating code cache: %w", err)
	}
	return unpackCode(root, digest, code, name, rt.cfg.MaxCodeBytes, rt.cfg.MaxCodeFiles)
}

// template is prepared code: the directory and the command that starts it.
type template struct {
	rt      *Runtime
	spec    runtime.Spec
	dir     string
	args    []string
	execEnv string
	handler string
	spares  *spare.Slot[*instance]
}

// env is the environment of one instance: the function's own variables, then
// the Lambda variables (which win), and nothing from the server's environment.
func (t *template) env(apiAddr string, instanceID string) []string {
	s := &t.spec
	mem := s.MemoryMB
	if mem <= 0 {
		mem = 128
	}
	vars := make(map[string]string, len(s.Env)+20)
	vars["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	vars["LANG"] = "C.UTF-8"
	for k, v := range s.Env {
		vars[k] = v
	}
	version := strconv.Itoa(s.Version)
	if s.Version == 0 {
		version = "$LATEST"
	}
	for k, v := range map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          apiAddr,
		"LAMBDA_TASK_ROOT":                t.dir,
		"LAMBDA_RUNTIME_DIR":              t.dir,
		"AWS_LAMBDA_FUNCTION_NAME":        s.Function,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(mem),
		"AWS_LAMBDA_FUNCTION_VERSION":     version,
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/" + s.Function,
		"AWS_LAMBDA_LOG_STREAM_NAME":      time.Now().UTC().Format("2006/01/02") + "/[" + version + "]" + instanceID,
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      "local",
		"AWS_DEFAULT_REGION":              "local",
		"AWS_EXECUTION_ENV":               t.execEnv,
		"TZ":                              "UTC",
	} {
		vars[k] = v
	}
	if t.handler != "" {
		vars["_HANDLER"] = t.handler
	}
	if t.spec.Runtime == runtime.Python3 {
		vars["PYTHONUNBUFFERED"] = "1"
		vars["PYTHONDONTWRITEBYTECODE"] = "1"
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Close kills the template's spare. Unpacked code stays cached by digest
// for the next deploy of the same code.
func (t *template) Close() error {
	t.spares.Close()
	return nil
}
