// Package wasm owns the WebAssembly runtimes of Nimbus: "wasm" (the Nimbus
// reactor ABI v1, warm instances serving many requests in a row) and
// "wasm-cgi" (WAGI/CGI command modules, a fresh instance per request), both on
// one shared wazero runtime with an on-disk compilation cache. Fresh "wasm"
// instances start from a verified post-initialisation snapshot (snapshot.go,
// rewrite.go); compiled modules stay in memory under an LRU bound
// (modcache.go) and linear memory buffers are reused (memory.go).
package wasm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
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
	// MaxModules and MaxModuleBytes bound the compiled modules kept in
	// memory (defaults DefaultMaxModules and DefaultMaxModuleBytes, the
	// latter counted as WebAssembly binary bytes). Least recently used
	// modules beyond them are closed and compiled again, from the disk
	// cache, when next instantiated.
	MaxModules     int
	MaxModuleBytes int64
	// MemoryPoolBytes bounds the linear memory buffers of closed instances
	// kept for new ones (default DefaultMemoryPoolBytes; negative keeps
	// none). A reused buffer spares a new instance its page faults.
	MemoryPoolBytes int64
}

// DefaultMemoryPoolBytes is the default of Config.MemoryPoolBytes.
const DefaultMemoryPoolBytes = 64 << 20

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
	mods     *modCache
	bufs     *bufPool
	// Background snapshot jobs: started under jobMu unless closed.
	jobMu      sync.Mutex
	jobs       sync.WaitGroup
	jobCtx     context.Context
	cancelJobs context.CancelFunc
	snapSem    chan struct{} // bounds concurrent snapshot jobs
	start      time.Time     // base of snapshot clocks
	// memBytes is the linear memory allocated by all live instances.
	memBytes atomic.Int64
	// spares bounds the templates' spare instances (spare.go).
	spares spare.Set
	closed atomic.Bool
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
	if cfg.MaxModules <= 0 {
		cfg.MaxModules = DefaultMaxModules
	}
	if cfg.MaxModuleBytes <= 0 {
		cfg.MaxModuleBytes = DefaultMaxModuleBytes
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger.With("component", "wasm"), start: time.Now()}
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
	// Deadlines are enforced by the interrupt global of every module
	// (interrupt.go), not by wazero's WithCloseOnContextDone.
	rc := wazero.NewRuntimeConfig().
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
	r.mods = newModCache(r.rt, cfg.MaxModules, cfg.MaxModuleBytes)
	if cfg.MemoryPoolBytes == 0 {
		cfg.MemoryPoolBytes = DefaultMemoryPoolBytes
	}
	r.cfg.MemoryPoolBytes = cfg.MemoryPoolBytes
	r.jobCtx, r.cancelJobs = context.WithCancel(context.WithoutCancel(ctx))
	r.snapSem = make(chan struct{}, 1)
	r.bufs = newBufPool(cfg.MemoryPoolBytes)
	return r, nil
}

func (r *Runtime) closeAll(ctx context.Context) {
	_ = r.rt.Close(ctx)
	_ = r.cache.Close(ctx)
}

// Close closes every instance and template and stops the log pump.
func (r *Runtime) Close(ctx context.Context) error {
	r.jobMu.Lock()
	already := r.closed.Swap(true)
	r.jobMu.Unlock()
	if already {
		return nil
	}
	r.cancelJobs()
	r.jobs.Wait()
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

// PooledMemoryBytes reports the memory buffers kept for new instances.
func (r *Runtime) PooledMemoryBytes() int64 { return r.bufs.bytes() }

// ModuleCacheStats reports the compiled-module cache.
func (r *Runtime) ModuleCacheStats() ModuleCacheStats { return r.mods.stats() }

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
	// Every module gets its deadline checks (interrupt.go) before anything
	// else reads, snapshots or compiles it.
	if code, err = addInterrupt(code, info); err != nil {
		return nil, err
	}
	t := &template{
		rt:            r,
		spec:          *spec,
		limit:         uint64(limitPages) * pageSize,
		cgi:           spec.Runtime == runtime.WasmCGI,
		hasInit:       info.exportsFunc("_initialize"),
		hasNimbusInit: info.exportsFunc("nimbus_init"),
		hasStart:      info.hasStart,
	}
	t.modCfg = t.baseConfig()
	t.refs.Store(1)

	// A snapshot is taken (or read from the disk cache) at the end of
	// Prepare, i.e. at deploy. The plain module, with its mutable globals
	// exported for the capture, serves if the snapshot is refused.
	if spec.Runtime == runtime.Wasm && spec.Snapshot {
		sm, err := analyseForSnapshot(code)
		var capture []byte
		if err == nil {
			capture, err = sm.captureCode()
		}
		if err != nil {
			r.log.Info("snapshot refused, serving the plain module", "function", spec.Function, "version", spec.Version, "reason", err)
		} else {
			sum := sha256.Sum256(code)
			// Nothing of the analysis is kept: it holds on to the code.
			t.snap, code = true, capture
			t.snapPath = r.snapshotPath(snapshotKey(hex.EncodeToString(sum[:]), spec, limitPages))
		}
	}
	srcDir := ""
	if r.cfg.CacheDir != "" {
		srcDir = filepath.Join(r.cfg.CacheDir, "modules")
	}
	src, err := newSource(srcDir, code)
	if err != nil {
		return nil, err
	}
	t.src = src
	e, err := r.compile(ctx, t, src)
	if err != nil {
		return nil, err
	}
	r.mods.hold(src.key)
	r.mods.release(e)
	if t.snap {
		// Snapshot at deploy, so that even the first start of the version is
		// a snapshot start. Code and configuration already snapshotted (by
		// this or another function) come from the disk cache.
		t.snapStarted.Store(true)
		t.snapshotNow(ctx)
	}
	if !t.cgi && !t.hasStart {
		t.spares = spare.NewSlot(&r.spares, t.buildSpare, func(in *reactor) { _ = in.Close() })
		t.spares.Fill()
	}
	return t, nil
}

// compile compiles src through the module cache and checks its types. The
// entry is returned pinned.
func (r *Runtime) compile(ctx context.Context, t *template, src *modSource) (*modEntry, error) {
	start := time.Now()
	e, err := r.mods.acquire(ctx, src)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wasm: compiling %s: %w", t.spec.Function, ctx.Err())
		}
		return nil, &runtime.Error{Kind: runtime.BadCode, Message: "module does not compile", Err: err}
	}
	r.log.Debug("compiled module", "function", t.spec.Function, "version", t.spec.Version, "digest", t.spec.Digest, "took", time.Since(start))
	if err := r.checkTypes(t.spec.Runtime, e.compiled); err != nil {
		r.mods.release(e)
		return nil, err
	}
	return e, nil
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
