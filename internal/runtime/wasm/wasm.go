// Package wasm owns the WebAssembly runtimes of Nimbus: "wasm" (the Nimbus
// reactor ABI v1, warm instances serving many requests in a row) and
// "wasm-cgi" (WAGI/CGI command modules, a fresh instance per request), both on
// one shared wazero runtime with an on-disk compilation cache.
package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Config configures the wasm runtimes.
type Config struct {
	// CacheDir holds compiled code across restarts; empty keeps it in memory.
	CacheDir string
	// Logger receives the runtime's own messages; nil uses slog.Default().
	Logger *slog.Logger
	// MaxResponseBytes caps one response body (default 16 MiB). A larger
	// response fails the invocation with BadResponse.
	MaxResponseBytes int
}

// DefaultMemoryMB is the memory cap of an instance whose spec names none.
const DefaultMemoryMB = 128

// DefaultMaxResponseBytes is the default of Config.MaxResponseBytes.
const DefaultMaxResponseBytes = 16 << 20

const wasiModule = wasi_snapshot_preview1.ModuleName

// Runtime runs wasm and wasm-cgi functions. It implements runtime.Runtime for
// both: Prepare reads spec.Runtime.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	rt    wazero.Runtime
	cache wazero.CompilationCache
	// provided lists the functions each host module offers, by module and name.
	provided map[string]map[string]api.FunctionDefinition
	logs     *logPump
	// memBytes is the linear memory allocated by all live instances.
	memBytes atomic.Int64
	closed   atomic.Bool
}

var _ runtime.Runtime = (*Runtime)(nil)

// New builds the runtimes. Close releases them.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger.With("component", "wasm")}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache in %s: %w", cfg.CacheDir, err)
		}
		r.cache = c
	} else {
		r.cache = wazero.NewCompilationCache()
	}
	// Every instance's memory is capped by its own allocator (memory.go), so
	// that one runtime serves all memory sizes and a refused growth is known
	// for certain; the runtime-wide limit is the wasm32 maximum.
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithCompilationCache(r.cache).
		WithMemoryLimitPages(65536)
	r.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r.rt); err != nil {
		r.closeAll(ctx)
		return nil, fmt.Errorf("wasm: instantiating WASI: %w", err)
	}
	host, err := instantiateHostModule(ctx, r.rt)
	if err != nil {
		r.closeAll(ctx)
		return nil, fmt.Errorf("wasm: instantiating the nimbus host module: %w", err)
	}
	r.provided = map[string]map[string]api.FunctionDefinition{
		wasiModule: r.rt.Module(wasiModule).ExportedFunctionDefinitions(),
		HostModule: host.ExportedFunctionDefinitions(),
	}
	r.logs = newLogPump(4096)
	return r, nil
}

func (r *Runtime) closeAll(ctx context.Context) {
	_ = r.rt.Close(ctx)
	_ = r.cache.Close(ctx)
}

// Close closes every instance and template and stops the log pump.
func (r *Runtime) Close(ctx context.Context) error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.rt.Close(ctx)
	if cerr := r.cache.Close(ctx); err == nil {
		err = cerr
	}
	r.logs.close()
	if err != nil {
		return fmt.Errorf("wasm: closing runtime: %w", err)
	}
	return nil
}

// LinearMemoryBytes reports the linear memory held by all live instances.
func (r *Runtime) LinearMemoryBytes() int64 { return r.memBytes.Load() }

// DroppedLogLines reports how many log lines were dropped because the log
// sinks did not keep up.
func (r *Runtime) DroppedLogLines() int64 { return r.logs.dropped.Load() }

// Detect names the runtime a module is written for: runtime.Wasm if it exports
// nimbus_handle, runtime.WasmCGI if it exports _start.
func Detect(code []byte) (string, error) {
	info, err := parseModule(code)
	if err != nil {
		return "", err
	}
	return info.detect()
}

func (m *moduleInfo) detect() (string, error) {
	switch {
	case m.exportsFunc("nimbus_handle"):
		return runtime.Wasm, nil
	case m.exportsFunc("_start"):
		return runtime.WasmCGI, nil
	}
	return "", runtime.Errorf(runtime.BadCode,
		"module exports neither nimbus_handle (a Nimbus SDK function, runtime wasm) nor _start (a WASI command, runtime wasm-cgi)")
}

// Prepare validates and compiles code for spec. Problems with the code are
// *runtime.Error of kind BadCode.
func (r *Runtime) Prepare(ctx context.Context, spec *runtime.Spec, code []byte) (runtime.Template, error) {
	if spec.Runtime != runtime.Wasm && spec.Runtime != runtime.WasmCGI {
		return nil, fmt.Errorf("wasm: runtime %q is not a wasm runtime", spec.Runtime)
	}
	info, err := parseModule(code)
	if err != nil {
		return nil, err
	}
	limitPages := memoryPages(spec)
	if err := r.checkModule(spec.Runtime, info, limitPages); err != nil {
		return nil, err
	}
	start := time.Now()
	compiled, err := r.rt.CompileModule(experimental.WithCompilationWorkers(ctx, goruntime.GOMAXPROCS(0)), code)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wasm: compiling %s: %w", spec.Function, ctx.Err())
		}
		return nil, &runtime.Error{Kind: runtime.BadCode, Message: "module does not compile", Err: err}
	}
	r.log.Debug("compiled module", "function", spec.Function, "version", spec.Version, "digest", spec.Digest, "took", time.Since(start))
	if err := r.checkTypes(spec.Runtime, compiled); err != nil {
		_ = compiled.Close(ctx)
		return nil, err
	}
	t := &template{
		rt:       r,
		spec:     *spec,
		compiled: compiled,
		limit:    uint64(limitPages) * pageSize,
		cgi:      spec.Runtime == runtime.WasmCGI,
	}
	t.refs.Store(1)
	t.modCfg = t.baseConfig()
	t.hasInit = info.exportsFunc("_initialize")
	t.hasNimbusInit = info.exportsFunc("nimbus_init")
	return t, nil
}

func memoryPages(spec *runtime.Spec) uint32 {
	mb := spec.MemoryMB
	if mb <= 0 {
		mb = DefaultMemoryMB
	}
	return uint32(min(mb*16, 65536))
}

// checkModule refuses modules that cannot run, before the slow compile.
func (r *Runtime) checkModule(rtName string, info *moduleInfo, limitPages uint32) error {
	for _, im := range info.imports {
		if im.kind != kindFunc {
			return runtime.Errorf(runtime.BadCode, "module imports %s %q.%q; Nimbus provides only functions (from %q and %q)",
				kindName(im.kind), im.module, im.name, wasiModule, HostModule)
		}
		funcs, ok := r.provided[im.module]
		if !ok {
			return runtime.Errorf(runtime.BadCode, "module imports %q.%q, which Nimbus does not provide (it provides %q and %q)",
				im.module, im.name, wasiModule, HostModule)
		}
		if _, ok := funcs[im.name]; !ok {
			return runtime.Errorf(runtime.BadCode, "module imports %q.%q, which Nimbus does not provide", im.module, im.name)
		}
	}
	if k, ok := info.exports["memory"]; !ok || k != kindMemory {
		return runtime.Errorf(runtime.BadCode, "module does not export its memory as \"memory\"")
	}
	if info.memMin > int64(limitPages) {
		return runtime.Errorf(runtime.BadCode, "module needs %d MB of memory at start, more than its cap of %d MB: raise the function's memory",
			(info.memMin*pageSize+(1<<20)-1)>>20, limitPages/16)
	}
	switch rtName {
	case runtime.Wasm:
		if !info.exportsFunc("nimbus_handle") {
			if info.exportsFunc("_start") {
				return runtime.Errorf(runtime.BadCode, "runtime wasm needs a module exporting nimbus_handle (built with the Nimbus SDK); this one is a WASI command (exports _start): deploy it with runtime wasm-cgi")
			}
			return runtime.Errorf(runtime.BadCode, "runtime wasm needs a module exporting nimbus_handle (built with the Nimbus SDK)")
		}
		vs := info.abiVersions()
		if !slices.Contains(vs, "1") {
			if len(vs) > 0 {
				sort.Strings(vs)
				return runtime.Errorf(runtime.BadCode, "module was built for Nimbus ABI v%s; this server speaks v%d", strings.Join(vs, ", v"), ABIVersion)
			}
			return runtime.Errorf(runtime.BadCode, "module exports nimbus_handle but not nimbus_abi_version_1: rebuild it with a current Nimbus SDK")
		}
		if !info.exportsFunc("_initialize") && info.exportsFunc("_start") {
			return runtime.Errorf(runtime.BadCode, "module is a WASI command (exports _start): build it as a reactor, e.g. GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared")
		}
	case runtime.WasmCGI:
		if !info.exportsFunc("_start") {
			if info.exportsFunc("nimbus_handle") {
				return runtime.Errorf(runtime.BadCode, "runtime wasm-cgi needs a WASI command module (exporting _start); this one exports nimbus_handle: deploy it with runtime wasm")
			}
			return runtime.Errorf(runtime.BadCode, "runtime wasm-cgi needs a WASI command module (exporting _start)")
		}
	}
	return nil
}

// checkTypes checks the signatures of imports and of the exports Nimbus calls.
func (r *Runtime) checkTypes(rtName string, m wazero.CompiledModule) error {
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		want := r.provided[mod][name]
		if !sameSignature(f, want) {
			return runtime.Errorf(runtime.BadCode, "module imports %q.%q with type %s, but Nimbus provides %s",
				mod, name, signature(f), signature(want))
		}
	}
	exports := m.ExportedFunctions()
	want := map[string]string{"_initialize": "() -> ()", "_start": "() -> ()"}
	if rtName == runtime.Wasm {
		want["nimbus_handle"] = "() -> (i32)"
		want["nimbus_init"] = "() -> (i32)"
	}
	for name, sig := range want {
		if f, ok := exports[name]; ok && signature(f) != sig {
			return runtime.Errorf(runtime.BadCode, "module exports %s with type %s, want %s", name, signature(f), sig)
		}
	}
	return nil
}

func sameSignature(a, b api.FunctionDefinition) bool {
	return slices.Equal(a.ParamTypes(), b.ParamTypes()) && slices.Equal(a.ResultTypes(), b.ResultTypes())
}

func signature(f api.FunctionDefinition) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return names(f.ParamTypes()) + " -> " + names(f.ResultTypes())
}

// baseConfig is the module configuration every instance of t starts from.
func (t *template) baseConfig() wazero.ModuleConfig {
	c := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithArgs(t.spec.Function).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithSysNanotime()
	keys := make([]string, 0, len(t.spec.Env))
	for k := range t.spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c = c.WithEnv(k, t.spec.Env[k])
	}
	return c
}

// errClosed is returned by an instance used after Close.
var errClosed = errors.New("wasm: instance is closed")
