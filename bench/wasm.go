package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
	"github.com/nimbusfn/nimbus/internal/runtime/wasm"
)

func init() {
	addSuite("coldwasm", "Wasm cold start: snapshot vs plain vs bare wazero", coldWasmSuite)
}

// coldSamples is how many cold starts each variant gets, after
// warmupSamples that are not counted.
const (
	coldSamples   = 25
	warmupSamples = 8
)

// tinyHiModule is a hand-assembled non-Go guest of the Nimbus ABI: its
// nimbus_handle sets status 200 and writes "hi" from its data segment.
func tinyHiModule() []byte {
	leb := func(v uint32) []byte {
		var b []byte
		for {
			c := byte(v & 0x7f)
			v >>= 7
			if v == 0 {
				return append(b, c)
			}
			b = append(b, c|0x80)
		}
	}
	vec := func(items ...[]byte) []byte {
		b := leb(uint32(len(items)))
		for _, it := range items {
			b = append(b, it...)
		}
		return b
	}
	name := func(s string) []byte { return append(leb(uint32(len(s))), s...) }
	section := func(id byte, body []byte) []byte {
		return append(append([]byte{id}, leb(uint32(len(body)))...), body...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	types := section(1, vec(
		[]byte{0x60, 0, 0},                   // 0: () -> ()
		[]byte{0x60, 0, 1, 0x7f},             // 1: () -> i32
		[]byte{0x60, 1, 0x7f, 1, 0x7f},       // 2: (i32) -> i32
		[]byte{0x60, 2, 0x7f, 0x7f, 1, 0x7f}, // 3: (i32, i32) -> i32
	))
	imports := section(2, vec(
		cat(name("nimbus"), name("response_set_status"), []byte{0, 2}),
		cat(name("nimbus"), name("response_body_write"), []byte{0, 3}),
	))
	funcs := section(3, vec([]byte{0}, []byte{1}))
	memory := section(5, vec([]byte{0, 1}))
	exports := section(7, vec(
		cat(name("memory"), []byte{2, 0}),
		cat(name("nimbus_abi_version_1"), []byte{0, 2}),
		cat(name("nimbus_handle"), []byte{0, 3}),
	))
	handle := []byte{
		0,                               // no locals
		0x41, 0xc8, 0x01, 0x10, 0, 0x1a, // i32.const 200; call set_status; drop
		0x41, 16, 0x41, 2, 0x10, 1, 0x1a, // i32.const 16; i32.const 2; call body_write; drop
		0x41, 0, 0x0b, // i32.const 0; end
	}
	code := section(10, vec([]byte{2, 0, 0x0b}, append(leb(uint32(len(handle))), handle...)))
	data := section(11, vec(cat([]byte{0, 0x41, 16, 0x0b}, name("hi"))))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, imports, funcs, memory, exports, code, data)
}

// poolSize reads how many instances a function has.
func poolSize(base, name string) (int, error) {
	resp, err := http.Get(base + "/api/v1/functions/" + name)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Instances struct{ Starting, Idle, Busy int } `json:"instances"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, err
	}
	return v.Instances.Starting + v.Instances.Idle + v.Instances.Busy, nil
}

// coldHTTP measures scale-from-zero to first response of fn, n times: each
// sample waits until the pool is back at zero instances.
func coldHTTP(base, fn string, n int) ([]time.Duration, error) {
	cs := newColdSampler(base, fn)
	defer cs.close()
	var lat []time.Duration
	for len(lat) < n {
		d, err := cs.sample()
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// coldSampler takes scale-from-zero samples of one function one at a time,
// so that a suite can interleave them with its baseline's.
type coldSampler struct {
	base, fn string
	cl       *http.Client
	last     time.Time // the previous sample's answer
}

func newColdSampler(base, fn string) *coldSampler {
	return &coldSampler{base: base, fn: fn, cl: client(1)}
}

func (cs *coldSampler) close() { cs.cl.CloseIdleConnections() }

// atZero is how long a function stays at zero instances before a
// scale-from-zero sample. A start right after the scale-down overlaps the
// teardown of the instance just closed (for a sandboxed process the kernel
// reaps its memory, its pid and mount namespaces, its cgroup's charges):
// the Lambda bootstrap's start took ~2 ms longer within 20 ms of it than
// 500 ms after. A function scaled to zero is called again after a while,
// not at once.
const atZero = 500 * time.Millisecond

// waitZero waits until the function has been at zero instances for
// atZero. A suite that takes other samples between scale-from-zero ones
// calls it first, so that they do not overlap this function's teardown
// either.
func (cs *coldSampler) waitZero() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		size, err := poolSize(cs.base, cs.fn)
		if err != nil {
			return err
		}
		if size == 0 {
			time.Sleep(atZero)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pool did not reach zero (%d instances)", cs.fn, size)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sample waits until the function has been at zero instances for atZero,
// with its spare made, then times one request.
func (cs *coldSampler) sample() (time.Duration, error) {
	if err := cs.waitZero(); err != nil {
		return 0, err
	}
	// A function's spare is made spare.Delay after a start. A pool closed
	// sooner than that (scale.idle here is 1 ms, and the scaler ticks every
	// second) would sample a start without one, which a function idle for
	// any real scale.idle never sees.
	if d := 3*spare.Delay - time.Since(cs.last); d > 0 {
		time.Sleep(d)
	}
	d, err := timedCall(cs.cl, cs.base, cs.fn)
	cs.last = time.Now()
	return d, err
}

// timedCall times one request to fn on cl. It first sends a request to the
// API on the same keep-alive connection, so that the timed one pays no TCP
// handshake.
func timedCall(cl *http.Client, base, fn string) (time.Duration, error) {
	if resp, err := cl.Get(base + "/api/v1/functions/" + fn); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t0 := time.Now()
	resp, err := cl.Get(base + "/fn/" + fn)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("%s: status %d", fn, resp.StatusCode)
	}
	return time.Since(t0), nil
}

// sporadicHTTP times n requests to fn, each after atZero of idle and a
// request to the API on the same keep-alive connection: a cold sample's
// conditions without the cold start.
func sporadicHTTP(base, fn string, n int) ([]time.Duration, error) {
	cl := client(1)
	defer cl.CloseIdleConnections()
	var lat []time.Duration
	for len(lat) < n {
		time.Sleep(atZero)
		d, err := timedCall(cl, base, fn)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// bareWazero measures instantiate + first nimbus_handle call + close of
// code on a plain wazero runtime with stub host functions, n times.
// initialise runs _initialize and nimbus_init (a plain module); clock, if
// set, is the monotonic reading a snapshot continues from.
func bareWazero(code []byte, initialise bool, clock int64, n int) ([]time.Duration, error) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(wazero.NewCompilationCache()))
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	compiled, err := rt.CompileModule(ctx, code)
	if err != nil {
		return nil, err
	}
	hb := rt.NewHostModuleBuilder("nimbus")
	for _, f := range compiled.ImportedFunctions() {
		mod, fname, _ := f.Import()
		if mod != "nimbus" {
			continue
		}
		hb = hb.NewFunctionBuilder().WithGoModuleFunction(stubHostFunc(fname), f.ParamTypes(), f.ResultTypes()).Export(fname)
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().WithArgs("hello").WithSysWalltime()
	if clock > 0 {
		cfg = cfg.WithNanotime(func() int64 { return clock + int64(time.Since(start)) }, 1)
	} else {
		cfg = cfg.WithSysNanotime()
	}
	var lat []time.Duration
	for range n {
		t0 := time.Now()
		m, err := rt.InstantiateModule(ctx, compiled, cfg)
		if err != nil {
			return nil, err
		}
		if initialise {
			for _, fn := range []string{"_initialize", "nimbus_init"} {
				if f := m.ExportedFunction(fn); f != nil {
					if _, err := f.Call(ctx); err != nil {
						return nil, fmt.Errorf("%s: %w", fn, err)
					}
				}
			}
		}
		res, err := m.ExportedFunction("nimbus_handle").Call(ctx)
		if err != nil || api.DecodeI32(res[0]) != 0 {
			return nil, fmt.Errorf("nimbus_handle: %v %v", res, err)
		}
		lat = append(lat, time.Since(t0))
		m.Close(ctx)
	}
	return lat, nil
}

// stubHostFunc answers the ABI's imports for a GET / with no headers.
func stubHostFunc(name string) api.GoModuleFunc {
	put := func(m api.Module, stack []uint64, v []byte) {
		if uint32(len(v)) <= uint32(stack[1]) && len(v) > 0 {
			m.Memory().Write(uint32(stack[0]), v)
		}
		stack[0] = uint64(len(v))
	}
	switch name {
	case "request_method":
		return func(_ context.Context, m api.Module, stack []uint64) { put(m, stack, []byte("GET")) }
	case "request_path":
		return func(_ context.Context, m api.Module, stack []uint64) { put(m, stack, []byte("/")) }
	case "request_headers":
		return func(_ context.Context, m api.Module, stack []uint64) { put(m, stack, []byte{0, 0, 0, 0}) }
	case "request_head":
		// Content length 0; method GET, path /, four empty strings; no headers.
		head := []byte{0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'G', 'E', 'T', 1, 0, 0, 0, '/'}
		head = append(head, make([]byte, 4*4+4)...)
		return func(_ context.Context, m api.Module, stack []uint64) { put(m, stack, head) }
	case "response_body_write":
		return func(_ context.Context, _ api.Module, stack []uint64) { stack[0] = stack[1] }
	}
	return func(_ context.Context, m api.Module, stack []uint64) {
		if len(name) > 8 && name[:8] == "request_" && len(stack) >= 2 {
			put(m, stack, nil)
			return
		}
		if len(stack) > 0 {
			stack[0] = 0
		}
	}
}

func coldWasmSuite() error {
	hello, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	tiny := tinyHiModule()

	// In-process baselines first, on an otherwise idle process.
	wr, err := wasm.New(context.Background(), wasm.Config{})
	if err != nil {
		return err
	}
	snapCode, clock, err := wr.SnapshotModule(context.Background(), &runtime.Spec{Function: "hello", Version: 1, Runtime: runtime.Wasm}, hello)
	wr.Close(context.Background())
	if err != nil {
		return err
	}
	const bareN = 200
	barePlain, err := bareWazero(hello, true, 0, bareN)
	if err != nil {
		return fmt.Errorf("bare plain: %w", err)
	}
	bareSnap, err := bareWazero(snapCode, false, clock, bareN)
	if err != nil {
		return fmt.Errorf("bare snapshot: %w", err)
	}
	bareTiny, err := bareWazero(tiny, false, 0, bareN)
	if err != nil {
		return fmt.Errorf("bare tiny: %w", err)
	}

	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	idle := map[string]any{"scale": map[string]any{"idle": "1ms"}}
	plainCfg := map[string]any{"scale": map[string]any{"idle": "1ms"}, "snapshot": false}
	t0 := time.Now()
	if err := deploy(s.URL(), "snap", hello, idle); err != nil {
		return err
	}
	snapDeploy := time.Since(t0)
	t0 = time.Now()
	if err := deploy(s.URL(), "plain", hello, plainCfg); err != nil {
		return err
	}
	plainDeploy := time.Since(t0)
	if err := deploy(s.URL(), "tiny", tiny, idle); err != nil {
		return err
	}
	if err := deploy(s.URL(), "tinywarm", tiny, map[string]any{"scale": map[string]any{"min": 1}}); err != nil {
		return err
	}
	type row struct {
		name      string
		http      []time.Duration
		bare      []time.Duration
		bareLabel string
	}
	rows := []row{
		{name: "Go hello, snapshot (default)", bare: bareSnap, bareLabel: "instantiate snapshot + call"},
		{name: "Go hello, `snapshot: false`", bare: barePlain, bareLabel: "instantiate + _initialize + nimbus_init + call"},
		{name: "tiny non-Go module (hand-assembled)", bare: bareTiny, bareLabel: "instantiate + call"},
	}
	for i, fn := range []string{"snap", "plain", "tiny"} {
		// The first cold start of a version starts its snapshot in the
		// background (from the plain module); warm-up samples let it land.
		if _, err := coldHTTP(s.URL(), fn, warmupSamples); err != nil {
			return err
		}
		if rows[i].http, err = coldHTTP(s.URL(), fn, coldSamples); err != nil {
			return err
		}
	}
	// The same request to a warm instance of the same module, spaced as
	// the cold samples are: what one request after an idle spell costs on
	// this machine with this client, Nimbus's cold path aside.
	floor, err := sporadicHTTP(s.URL(), "tinywarm", coldSamples)
	if err != nil {
		return err
	}
	fmt.Printf("Scale from zero to first response over HTTP on loopback (keep-alive connection; the pool is at zero instances before each of %d samples, `scale.idle: 1ms`; %d uncounted cold starts first, during which the snapshot is taken in the background), beside bare wazero in-process (%d samples: instantiate, first call, close; stub host functions).\n\n", coldSamples, warmupSamples, bareN)
	fmt.Println("| function | HTTP cold p50 | HTTP cold p99 | bare wazero p50 | bare p99 | HTTP / bare p50 |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s (%s) | %s | %.1f× |\n", r.name, ms(pctOf(r.http, .5)), ms(pctOf(r.http, .99)),
			ms(pctOf(r.bare, .5)), r.bareLabel, ms(pctOf(r.bare, .99)), float64(pctOf(r.http, .5))/float64(pctOf(r.bare, .5)))
	}
	fmt.Printf("\nThe same tiny module kept warm (`scale.min: 1`), called the same way (%s idle, then one request on the warm connection): p50 %s, p99 %s; the tiny cold start adds %s at p50 to a request after an idle spell.\n",
		atZero, ms(pctOf(floor, .5)), ms(pctOf(floor, .99)), ms(pctOf(rows[2].http, .5)-pctOf(floor, .5)))
	fmt.Printf("\n**snapshot speed-up** (HTTP cold p50, plain / snapshot) = **%.1f×**; deploy (API, incl. compile and snapshot) snap %s, plain %s; snapshot module %d KB vs %d KB.\n",
		float64(pctOf(rows[1].http, .5))/float64(pctOf(rows[0].http, .5)), ms(snapDeploy), ms(plainDeploy), len(snapCode)>>10, len(hello)>>10)
	return nil
}
