package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Snapshots (the Wizer technique): when a wasm function version's first
// instance starts, its module is instantiated once more in the background
// with its real configuration, _initialize and nimbus_init run, and its
// memory and globals are captured into a new module whose instances start in
// that state — no data segments of the original to evaluate and no language
// runtime start-up. The snapshot is checked against the plain module on a
// few requests before it is used, and cached on disk. Taking it lazily keeps
// deployed functions that are never called free of its cost (a compile).

// snapshotFormat versions the snapshot files and keys.
const snapshotFormat = "nimbus-snapshot-v1"

const snapMagic = "NSNAP1\n"

// snapshotKey names the snapshot of code for spec: everything the guest can
// read during initialisation is part of it.
func snapshotKey(codeKey string, spec *runtime.Spec, limitPages uint32) string {
	h := sha256.New()
	// What initialisation can see is the code, its environment and its memory
	// cap, nothing else (no names, no tenant): identical inputs give an
	// identical image, so functions deployed with the same code and
	// configuration share one snapshot (and one compile).
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", snapshotFormat, codeKey, limitPages)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		fmt.Fprintf(h, "%s=%s\x00", k, spec.Env[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// snapshotImage is a ready snapshot: the module and the guest's monotonic
// clock reading when it was taken.
type snapshotImage struct {
	code  []byte
	clock int64
}

func encodeSnapshot(img *snapshotImage) []byte {
	b := make([]byte, 0, len(snapMagic)+8+len(img.code))
	b = append(b, snapMagic...)
	b = binary.LittleEndian.AppendUint64(b, uint64(img.clock))
	return append(b, img.code...)
}

func decodeSnapshot(b []byte) (*snapshotImage, error) {
	if len(b) < len(snapMagic)+8 || string(b[:len(snapMagic)]) != snapMagic {
		return nil, errors.New("not a snapshot file")
	}
	b = b[len(snapMagic):]
	return &snapshotImage{clock: int64(binary.LittleEndian.Uint64(b)), code: b[8:]}, nil
}

// snapshotSource is a modSource for a snapshot file (or bytes, without a
// cache directory).
//
// Its instances start from the snapshot split into code without data
// segments and a memory image (splitSnapshot): the image is copied into a
// pooled buffer when an instance closes, so that the next one finds it in
// place rather than evaluating the segments as it starts.
func snapshotSource(path string, img *snapshotImage) *modSource {
	sum := sha256.Sum256(img.code)
	src := &modSource{key: hex.EncodeToString(sum[:]) + "-split", size: len(img.code), split: true}
	if path == "" {
		code := img.code
		src.load = func() ([]byte, error) { return code, nil }
		return src
	}
	src.load = func() ([]byte, error) {
		b, err := os.ReadFile(path)
		if err == nil {
			var img *snapshotImage
			if img, err = decodeSnapshot(b); err == nil {
				return img.code, nil
			}
		}
		return nil, fmt.Errorf("wasm: reloading snapshot %s: %w", filepath.Base(path), err)
	}
	return src
}

// snapshotClock is the monotonic clock of a snapshot instance: it continues
// from the reading at capture, so the guest never sees it go back.
func (r *Runtime) snapshotClock(at int64) func() int64 {
	start := r.start
	return func() int64 { return at + int64(time.Since(start)) }
}

// captureClock is the monotonic clock of the capture instance.
func (r *Runtime) captureClock() int64 { return int64(time.Since(r.start)) }

// takeSnapshot instantiates plain (the module with its mutable globals
// exported, compiled), initialises it, captures it, and checks the
// snapshot against it. A nil image with a nil error never happens: either
// an image or the reason there is none.
func (r *Runtime) takeSnapshot(ctx context.Context, t *template, m *snapModule, plain wazero.CompiledModule) (_ *snapshotImage, _ *modEntry, err error) {
	compileCtx := ctx
	// Only the guest's own runs are bounded: compiling may take long on a
	// busy machine.
	ctx, cancel := context.WithTimeout(ctx, prepareRunTimeout(t))
	defer cancel()
	// The capture instance is a plain instance of the function, without log
	// output: nothing of Prepare is an invocation.
	quiet := t.quietCopy()
	capture, err := quiet.startReactor(ctx, plain, nil, false, quiet.baseConfig().WithNanotime(r.captureClock, 1))
	if err != nil {
		return nil, nil, fmt.Errorf("initialising the module: %w", err)
	}
	defer capture.closeModule()
	mem := capture.mod.Memory()
	if mem == nil {
		return nil, nil, errors.New("module has no memory")
	}
	size := mem.Size()
	if size%pageSize != 0 {
		return nil, nil, fmt.Errorf("memory size %d is not whole pages", size)
	}
	view, _ := mem.Read(0, size)
	image := bytes.Clone(view)
	vals := map[int]uint64{}
	for i, g := range m.globals {
		if !g.mutable {
			continue
		}
		eg := capture.mod.ExportedGlobal(snapshotGlobalExport(i))
		if eg == nil {
			return nil, nil, fmt.Errorf("global %d is not exported by the capture module", i)
		}
		vals[i] = eg.Get()
	}
	img := &snapshotImage{code: m.snapshotCode(image, vals), clock: r.captureClock()}
	image = nil

	// Check the snapshot against the plain instance, request by request.
	src := snapshotSource("", img)
	se, err := r.mods.acquire(compileCtx, src)
	if err != nil {
		return nil, nil, fmt.Errorf("compiling the snapshot: %w", err)
	}
	ctx, cancel = context.WithTimeout(compileCtx, prepareRunTimeout(t))
	defer cancel()
	defer func() {
		if err != nil {
			r.mods.release(se)
			r.mods.dropUnheld(src.key)
		}
	}()
	snap, err := quiet.startReactor(ctx, se.compiled, se.img, true, quiet.baseConfig().WithNanotime(r.snapshotClock(img.clock), 1))
	if err != nil {
		return nil, nil, fmt.Errorf("starting the snapshot: %w", err)
	}
	defer snap.closeModule()
	for i, req := range verifyRequests() {
		a, errA := capture.record(ctx, req())
		b, errB := snap.record(ctx, req())
		if errA != nil || errB != nil {
			if runtime.KindOf(errA) == runtime.KindOf(errB) && errA != nil && errB != nil {
				continue // both failed the same way
			}
			return nil, nil, &errMismatch{fmt.Sprintf("check %d: plain module: %v; snapshot: %v", i+1, errA, errB)}
		}
		if diff := a.diff(b); diff != "" {
			return nil, nil, &errMismatch{fmt.Sprintf("check %d: snapshot answers differently from the plain module: %s", i+1, diff)}
		}
	}
	return img, se, nil
}

// quietCopy is t without log output, for instances run during Prepare.
func (t *template) quietCopy() *template {
	q := &template{rt: t.rt, spec: t.spec, limit: t.limit, cgi: t.cgi, hasInit: t.hasInit, hasNimbusInit: t.hasNimbusInit}
	q.spec.Logs = nil
	q.spec.Host = nil // no side effects (kv, objects, …) at Prepare
	q.quiet = true
	return q
}

// errMismatch is a snapshot that does not answer like the plain module.
type errMismatch struct{ msg string }

func (e *errMismatch) Error() string { return e.msg }

// prepareRunTimeout bounds how long the guest may run during Prepare.
func prepareRunTimeout(t *template) time.Duration {
	return max(t.spec.Timeout, 10*time.Second)
}

// verifyRequests are the requests a snapshot must answer like the plain
// module: a GET and a POST with a body.
func verifyRequests() []func() *runtime.Request {
	mk := func(method, query string, body []byte) func() *runtime.Request {
		return func() *runtime.Request {
			r := &runtime.Request{
				InvocationID: "snapshot-check", Method: method, ScriptName: "/fn/check", Path: "/", RawQuery: query,
				Header: http.Header{"User-Agent": {"nimbus-snapshot-check"}, "Accept": {"*/*"}},
				Host:   "127.0.0.1", RemoteAddr: "127.0.0.1:1", Trigger: "http",
			}
			if body != nil {
				r.Header.Set("Content-Type", "text/plain")
				r.Body = bytes.NewReader(body)
				r.ContentLength = int64(len(body))
			}
			return r
		}
	}
	return []func() *runtime.Request{
		mk(http.MethodGet, "", nil),
		mk(http.MethodPost, "check=1", []byte("nimbus snapshot check")),
		mk(http.MethodGet, "name=nimbus", nil),
	}
}

// response is a recorded response.
type response struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *response) Header() http.Header         { return w.header }
func (w *response) WriteHeader(status int)      { w.status = status }
func (w *response) Write(p []byte) (int, error) { return w.body.Write(p) }

func (w *response) diff(o *response) string {
	if w.status != o.status {
		return "status " + strconv.Itoa(w.status) + " vs " + strconv.Itoa(o.status)
	}
	if !maps.EqualFunc(w.header, o.header, slices.Equal) {
		return fmt.Sprintf("headers %v vs %v", w.header, o.header)
	}
	if !bytes.Equal(w.body.Bytes(), o.body.Bytes()) {
		return fmt.Sprintf("body %q vs %q", trimForLog(w.body.Bytes()), trimForLog(o.body.Bytes()))
	}
	return ""
}

func trimForLog(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "…"...)
	}
	return b
}

func (in *reactor) record(ctx context.Context, req *runtime.Request) (*response, error) {
	w := &response{header: http.Header{}}
	err := in.Invoke(ctx, req, w)
	return w, err
}

// prepareSnapshot takes t's snapshot and makes t serve it. It returns false
// (and logs why) when t must keep running plain. plain is the compiled
// capture module (the code with its mutable globals exported).
func (r *Runtime) prepareSnapshot(ctx context.Context, t *template, m *snapModule, plain wazero.CompiledModule, path string) bool {
	start := time.Now()
	img, se, err := r.takeSnapshot(ctx, t, m, plain)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Info("snapshot refused, serving the plain module", "function", t.spec.Function, "version", t.spec.Version, "reason", err)
			var mismatch *errMismatch
			if path != "" && errors.As(err, &mismatch) {
				// A deterministic refusal: not worth trying again.
				_ = writeFileAtomic(path+".refused", []byte(err.Error()))
			}
		}
		return false
	}
	if path != "" {
		if err := writeFileAtomic(path, encodeSnapshot(img)); err != nil {
			r.log.Warn("snapshot not cached", "function", t.spec.Function, "err", err)
			path = ""
		}
	}
	r.useSnapshot(t, img, path)
	r.mods.release(se)
	r.log.Debug("snapshot taken", "function", t.spec.Function, "version", t.spec.Version, "bytes", len(img.code), "took", time.Since(start))
	return true
}

// useSnapshot makes new instances of t start from img.
func (r *Runtime) useSnapshot(t *template, img *snapshotImage, path string) {
	src := snapshotSource(path, img)
	cfg := t.baseConfig().WithNanotime(r.snapshotClock(img.clock), 1)
	r.mods.hold(src.key)
	t.mu.Lock()
	old := t.src
	t.src, t.snapshot, t.clockAt, t.modCfg = src, true, img.clock, cfg
	t.mu.Unlock()
	r.mods.unhold(old.key)
}

// snapshotLater starts t's snapshot in the background unless it was taken
// or is being taken.
func (r *Runtime) snapshotLater(t *template) {
	if t.snapStarted.Load() || !t.snapStarted.CompareAndSwap(false, true) {
		return
	}
	r.jobMu.Lock()
	defer r.jobMu.Unlock()
	if r.closed.Load() {
		return
	}
	r.jobs.Add(1)
	go func() {
		defer r.jobs.Done()
		select {
		case r.snapSem <- struct{}{}:
		case <-r.jobCtx.Done():
			return
		}
		defer func() { <-r.snapSem }()
		t.snapshotNow(r.jobCtx)
	}()
}

// snapshotNow takes t's snapshot (once; a call while another takes it
// waits for it) and reports whether t serves one.
func (t *template) snapshotNow(ctx context.Context) bool {
	if t.snap {
		t.snapOnce.Do(func() { t.rt.makeSnapshot(ctx, t) })
	}
	_, snap, _ := t.current()
	return snap
}

// makeSnapshot gives t a snapshot, from the disk cache or taken now.
func (r *Runtime) makeSnapshot(ctx context.Context, t *template) {
	if !t.acquire() {
		return // closed meanwhile
	}
	defer t.release()
	img, refused := cachedSnapshot(t.snapPath)
	if refused {
		return
	}
	if img != nil {
		src := snapshotSource(t.snapPath, img)
		e, err := r.mods.acquire(ctx, src)
		if err == nil {
			r.useSnapshot(t, img, t.snapPath)
			r.mods.release(e)
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("cached snapshot does not load; taking it again", "function", t.spec.Function, "path", t.snapPath, "err", err)
	}
	src, _, _ := t.current()
	code, err := src.load()
	var sm *snapModule
	if err == nil {
		// The capture module analyses like the original: it only exports more.
		sm, err = analyseForSnapshot(code)
	}
	if err != nil {
		r.log.Warn("snapshot not taken", "function", t.spec.Function, "version", t.spec.Version, "err", err)
		return
	}
	e, err := r.mods.acquire(ctx, src)
	if err != nil {
		return
	}
	defer r.mods.release(e)
	r.prepareSnapshot(ctx, t, sm, e.compiled, t.snapPath)
}

// cachedSnapshot reads a snapshot from path. refused reports a module known
// not to snapshot (with the same key).
func cachedSnapshot(path string) (img *snapshotImage, refused bool) {
	if path == "" {
		return nil, false
	}
	if _, err := os.Stat(path + ".refused"); err == nil {
		return nil, true
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, false
	}
	img, err = decodeSnapshot(b)
	if err != nil {
		return nil, false
	}
	return img, false
}

// snapshotPath is where the snapshot of key lives, or "" without a cache dir.
func (r *Runtime) snapshotPath(key string) string {
	if r.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(r.cfg.CacheDir, "snapshots", key+".snap")
}

// closeModule closes the instance's module without touching its template.
func (in *reactor) closeModule() {
	if !in.closed.Swap(true) {
		_ = in.mod.Close(context.Background())
	}
}

// SnapshotModule returns the snapshot of a wasm function's code that Prepare
// would serve for spec, and the monotonic clock reading its instances must
// continue from. It is for tools and benchmarks that run the snapshot
// outside Nimbus; an error says why there is none.
func (r *Runtime) SnapshotModule(ctx context.Context, spec *runtime.Spec, code []byte) ([]byte, int64, error) {
	s := *spec
	s.Snapshot = true
	tpl, err := r.Prepare(ctx, &s, code)
	if err != nil {
		return nil, 0, err
	}
	defer tpl.Close()
	t := tpl.(*template)
	if !t.snapshotNow(ctx) {
		return nil, 0, fmt.Errorf("wasm: %s has no snapshot (the log says why)", spec.Function)
	}
	t.mu.Lock()
	src, clock := t.src, t.clockAt
	t.mu.Unlock()
	b, err := src.load()
	return b, clock, err
}
