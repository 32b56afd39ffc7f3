package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// template is a compiled module for one function version.
type template struct {
	rt    *Runtime
	spec  runtime.Spec
	quiet bool // runs during Prepare: no logs, no pooled memory
	// mu guards the module new instances start from, which changes once
	// when a snapshot is ready (src, snapshot, clockAt, modCfg).
	mu       sync.Mutex
	src      *modSource
	snapshot bool  // src is a snapshot: nothing to initialise
	clockAt  int64 // the snapshot's monotonic clock reading
	modCfg   wazero.ModuleConfig
	// snap is set when a snapshot is wanted and the module allows one;
	// snapOnce takes it (on the first instance, or snapshotNow).
	snap          bool
	snapPath      string
	snapOnce      sync.Once
	snapStarted   atomic.Bool
	limit         uint64 // memory cap in bytes
	cgi           bool
	hasInit       bool
	hasNimbusInit bool
	hasStart      bool
	spares        *spare.Slot[*reactor] // nil: no spares (wasm-cgi, a start function)
	// refs counts the template itself and its open instances; the module
	// cache lets go of src when it drops to zero.
	refs   atomic.Int64
	closed atomic.Bool
	once   sync.Once
}

var _ runtime.Template = (*template)(nil)

func (t *template) acquire() bool {
	if t.closed.Load() {
		return false
	}
	for {
		n := t.refs.Load()
		if n <= 0 {
			return false
		}
		if t.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (t *template) release() {
	if t.refs.Add(-1) == 0 {
		src, _, _ := t.current()
		t.rt.mods.unhold(src.key)
	}
}

// pool is the buffer pool of t's instances; nil for instances run during
// Prepare, whose memory would otherwise linger in the pool.
func (t *template) pool() *bufPool {
	if t.quiet {
		return nil
	}
	return t.rt.bufs
}

// current returns the module new instances start from.
func (t *template) current() (*modSource, bool, wazero.ModuleConfig) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.src, t.snapshot, t.modCfg
}

// Close releases the compiled code once every instance is closed.
func (t *template) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		if t.spares != nil {
			t.spares.Close()
		}
		t.release()
	})
	return nil
}

// NewInstance starts an instance. For wasm-cgi it only reserves the template:
// each invocation instantiates a fresh module.
func (t *template) NewInstance(ctx context.Context) (runtime.Instance, error) {
	if t.spares != nil {
		if in, ok := t.spares.Take(ctx); ok {
			t.spares.RefillLater()
			return in, nil
		}
	}
	if !t.acquire() {
		return nil, runtime.Errorf(runtime.StartFailed, "wasm: template of %s v%d is closed", t.spec.Function, t.spec.Version)
	}
	if t.cgi {
		return newCGIInstance(t), nil
	}
	if t.snap {
		t.rt.snapshotLater(t)
	}
	inst, err := t.newReactor(ctx)
	if err != nil {
		t.release()
		return nil, err
	}
	if t.spares != nil {
		t.spares.RefillLater() // a function that fails to start gets no spare
	}
	return inst, nil
}

// sandbox is what every instance has: its output streams, memory cap and the
// context of the call in progress (for sleeps).
type sandbox struct {
	t      *template
	id     string // invocation in progress
	stdout lineWriter
	stderr lineWriter
	mem    memoryCap
	ctx    context.Context // of the call in progress
	cfg    wazero.ModuleConfig
}

func (s *sandbox) init(t *template, cfg wazero.ModuleConfig) {
	s.t = t
	s.cfg = cfg
	sink := t.spec.Logs
	s.stdout = lineWriter{pump: t.rt.logs, sink: sink, stream: "stdout", id: &s.id}
	s.stderr = lineWriter{pump: t.rt.logs, sink: sink, stream: "stderr", id: &s.id, keepTail: true}
	s.mem = memoryCap{limit: t.limit, live: &t.rt.memBytes, pool: t.pool()}
}

// sleep is the instance's nanosleep: it ends early when the call's context
// is done, so a sleeping guest cannot outlive its deadline.
func (s *sandbox) sleep(ns int64) {
	ctx := s.ctx
	if ctx == nil {
		time.Sleep(time.Duration(ns))
		return
	}
	timer := time.NewTimer(time.Duration(ns))
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
}

func (s *sandbox) config(stdoutToLog bool) wazero.ModuleConfig {
	c := s.cfg.WithStderr(&s.stderr).WithNanosleep(s.sleep)
	if stdoutToLog {
		c = c.WithStdout(&s.stdout)
	}
	return c
}

// classify turns a failed call into a runtime.Error.
func (s *sandbox) classify(ctx context.Context, err error, what string) error {
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || (isExit && exit.ExitCode() == sys.ExitCodeDeadlineExceeded):
		return &runtime.Error{Kind: runtime.TimedOut, Message: fmt.Sprintf("%s passed its deadline", what), Err: context.DeadlineExceeded}
	case errors.Is(ctx.Err(), context.Canceled) || (isExit && exit.ExitCode() == sys.ExitCodeContextCanceled):
		return &runtime.Error{Kind: runtime.Crashed, Message: fmt.Sprintf("%s was canceled", what), Err: context.Canceled}
	}
	tail := crashMessage(s.stderr.tail)
	if s.mem.outOfMemory() || bytesContains(s.stderr.tail, "out of memory") {
		msg := fmt.Sprintf("%s ran out of memory: it reached its cap of %d MB", what, s.t.limit>>20)
		if tail != "" {
			msg += " (" + tail + ")"
		}
		return &runtime.Error{Kind: runtime.OutOfMemory, Message: msg}
	}
	var msg string
	if isExit {
		msg = fmt.Sprintf("%s exited with code %d", what, exit.ExitCode())
	} else {
		msg = fmt.Sprintf("%s trapped: %s", what, firstLine(err.Error()))
	}
	if tail != "" {
		msg += ": " + tail
	}
	return &runtime.Error{Kind: runtime.Crashed, Message: msg, Err: err}
}

// reactor is a warm instance of a wasm (ABI v1) function.
type reactor struct {
	sandbox
	mod    api.Module
	handle api.Function
	intr   *interrupter
	stack  [1]uint64
	x      exchange
	view   reqView
	call   *invokeCtx // of the call in progress, or the next one
	busy   atomic.Bool
	closed atomic.Bool
}

var _ runtime.Instance = (*reactor)(nil)

func (t *template) newReactor(ctx context.Context) (*reactor, error) {
	src, snapshot, cfg := t.current()
	e, err := t.rt.mods.acquire(ctx, src)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.StartFailed, Message: fmt.Sprintf("starting %s v%d: loading its module", t.spec.Function, t.spec.Version), Err: err}
	}
	defer t.rt.mods.release(e)
	return t.startReactor(ctx, e.compiled, e.img, snapshot, cfg)
}

// startReactor instantiates compiled, its memory starting from img if set,
// and, unless it is a snapshot, runs its initialisation.
func (t *template) startReactor(ctx context.Context, compiled wazero.CompiledModule, img *memImage, snapshot bool, cfg wazero.ModuleConfig) (*reactor, error) {
	in := &reactor{}
	in.init(t, cfg)
	in.mem.img = img
	in.x.maxResp = t.rt.cfg.MaxResponseBytes
	in.x.host = newHostState(t.spec.Host)
	in.ctx = ctx
	defer func() { in.ctx = nil }()
	cctx := &callCtx{Context: experimental.WithMemoryAllocator(ctx, &in.mem), x: &in.x}
	mod, err := t.rt.rt.InstantiateModule(cctx, compiled, in.config(true))
	if err != nil {
		in.mem = memoryCap{}
		return nil, in.startError(ctx, err, "instantiating the module")
	}
	in.mod = mod
	in.intr = newInterrupter(mod)
	if t.hasInit && !snapshot {
		disarm := in.intr.arm(ctx)
		_, err := mod.ExportedFunction("_initialize").Call(cctx)
		disarm()
		if err != nil {
			_ = mod.Close(context.Background())
			return nil, in.startError(ctx, err, "_initialize")
		}
	}
	if t.hasNimbusInit && !snapshot {
		disarm := in.intr.arm(ctx)
		res, err := mod.ExportedFunction("nimbus_init").Call(cctx)
		disarm()
		if err == nil && len(res) == 1 && api.DecodeI32(res[0]) != 0 {
			err = fmt.Errorf("nimbus_init returned %d", api.DecodeI32(res[0]))
		}
		if err != nil {
			_ = mod.Close(context.Background())
			return nil, in.startError(ctx, err, "nimbus_init")
		}
	}
	in.stdout.flush()
	in.stderr.flush()
	in.handle = mod.ExportedFunction("nimbus_handle")
	return in, nil
}

func (in *reactor) startError(ctx context.Context, err error, step string) error {
	in.stdout.flush()
	in.stderr.flush()
	var re *runtime.Error
	if errors.As(in.classify(ctx, err, step), &re) {
		if re.Kind == runtime.OutOfMemory {
			return re
		}
		return &runtime.Error{Kind: runtime.StartFailed, Message: fmt.Sprintf("starting %s v%d: %s", in.t.spec.Function, in.t.spec.Version, re.Message), Err: err}
	}
	return &runtime.Error{Kind: runtime.StartFailed, Message: "starting " + in.t.spec.Function, Err: err}
}

// Invoke serves one request. The response is buffered and written to w only
// when nimbus_handle returns 0. It ends the call at req.Deadline (or ctx's,
// or the function's timeout) by itself: ctx needs no deadline.
func (in *reactor) Invoke(ctx context.Context, req *runtime.Request, w http.ResponseWriter) error {
	// busy before closed, and Close the other way round: a Close racing an
	// Invoke sees it busy, or the Invoke sees it closed.
	if !in.busy.CompareAndSwap(false, true) {
		return &runtime.Error{Kind: runtime.Crashed, Message: "instance is already serving an invocation", Err: errors.New("wasm: concurrent Invoke")}
	}
	defer in.busy.Store(false)
	if in.closed.Load() {
		return &runtime.Error{Kind: runtime.Crashed, Message: "instance is closed", Err: errClosed}
	}
	deadline := req.Deadline
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	if deadline.IsZero() && in.t.spec.Timeout > 0 {
		deadline = time.Now().Add(in.t.spec.Timeout)
	}
	c := in.call
	if c == nil {
		c = new(invokeCtx)
		in.call = c
	}
	c.begin(ctx, &in.x, deadline)
	defer func() {
		if !c.end() {
			in.call = nil
		}
	}()
	in.setRequest(req)
	in.id = req.InvocationID
	in.ctx = c
	in.stderr.resetTail()
	in.intr.watch(ctx, deadline)
	err := in.handle.CallWithStack(c, in.stack[:])
	in.intr.unwatch()
	in.stdout.flush()
	in.stderr.flush()
	in.ctx = nil
	in.id = ""
	defer in.x.release()
	if err != nil {
		return in.classify(c, err, "function")
	}
	if rc := api.DecodeI32(in.stack[0]); rc != 0 {
		msg := "function's nimbus_handle returned " + strconv.Itoa(int(rc))
		if tail := crashMessage(in.stderr.tail); tail != "" {
			msg += ": " + tail
		}
		return runtime.Errorf(runtime.Crashed, "%s", msg)
	}
	if in.x.tooLarge {
		return runtime.Errorf(runtime.BadResponse, "response body is over the limit of %d bytes", in.x.maxResp)
	}
	in.writeResponse(req, w)
	return nil
}

// EnforcesDeadline tells the invoke pipeline that Invoke stops the call at
// req.Deadline itself.
func (in *reactor) EnforcesDeadline() {}

func (in *reactor) setRequest(req *runtime.Request) {
	v := &in.view
	*v = reqView{
		method:        req.Method,
		path:          req.Path,
		query:         req.RawQuery,
		authority:     req.Host,
		remoteAddr:    req.RemoteAddr,
		invocationID:  req.InvocationID,
		header:        req.Header,
		body:          req.Body,
		contentLength: req.ContentLength,
	}
	if v.path == "" {
		v.path = "/"
	}
	if req.Body == nil {
		v.contentLength = 0
	}
	in.x.reset(v)
}

func (in *reactor) writeResponse(req *runtime.Request, w http.ResponseWriter) {
	h := w.Header()
	var spare []string
	if len(in.x.respHdr) > 0 {
		spare = addHeaders(h, string(in.x.respHdr)) // one allocation for every name and value
	}
	writeBody(w, req.Method, in.x.status, in.x.body, spare)
}

// addHeaders adds an encoded (already validated) header list held in s to h.
// The values of names seen once share one slice allocation, which has room
// for one more value: spare (length 0, capacity 1).
func addHeaders(h http.Header, s string) (spare []string) {
	count := int(le32s(s))
	s = s[4:]
	vals := make([]string, count+1)
	for i := range count {
		nl, vl := int(le32s(s)), int(le32s(s[4:]))
		s = s[8:]
		name, value := http.CanonicalHeaderKey(s[:nl]), s[nl:nl+vl]
		s = s[nl+vl:]
		if old, ok := h[name]; ok {
			h[name] = append(old, value)
			continue
		}
		vals[i] = value
		h[name] = vals[i : i+1 : i+1]
	}
	return vals[count : count : count+1]
}

func le32s(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// writeBody writes status and body, with a Content-Length that matches the
// body; spare, if it has room, holds the Content-Length value.
func writeBody(w http.ResponseWriter, method string, status int, body []byte, spare []string) {
	h := w.Header()
	h.Del("Transfer-Encoding")
	noBody := status < 200 || status == http.StatusNoContent || status == http.StatusNotModified
	if noBody {
		h.Del("Content-Length")
	} else if method != http.MethodHead || len(body) > 0 || h.Get("Content-Length") == "" {
		h["Content-Length"] = append(spare, strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	if !noBody && method != http.MethodHead && len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// Close frees the instance. It is safe to call more than once.
func (in *reactor) Close() error {
	if in.closed.Swap(true) {
		return nil
	}
	// Safe while an invocation runs (deleting a function mid-call): the
	// guest traps at its next loop (interrupt.go) and the call fails. Its
	// memory is reused only if no invocation runs.
	in.intr.stopNow()
	if !in.busy.Load() {
		in.mem.allowRecycle()
	}
	err := in.mod.Close(context.Background())
	in.t.release()
	if err != nil {
		return fmt.Errorf("wasm: closing instance of %s: %w", in.t.spec.Function, err)
	}
	return nil
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

func bytesContains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
