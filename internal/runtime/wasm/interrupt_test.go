package wasm

import (
	"context"
	"runtime"
	"testing"
	"time"

	nimbusrt "github.com/nimbusfn/nimbus/internal/runtime"
)

// spinModule is a non-Go guest whose nimbus_handle loops forever without
// calling the host. It has no global section, which the interrupt adds.
func spinModule() []byte {
	types := section(1, vec([]byte{0x60, 0, 0}, []byte{0x60, 0, 1, 0x7f}))
	funcs := section(3, vec([]byte{0}, []byte{1}))
	mem := section(5, vec([]byte{0, 1}))
	exps := section(7, vec(
		cat(wname("memory"), []byte{2, 0}),
		cat(wname("nimbus_abi_version_1"), []byte{0, 0}),
		cat(wname("nimbus_handle"), []byte{0, 1}),
	))
	spin := []byte{0, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00, 0x0b} // loop br 0 end; i32.const 0
	code := section(10, vec([]byte{2, 0, 0x0b}, cat(leb(uint32(len(spin))), spin)))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, funcs, mem, exps, code)
}

func TestInterruptStopsLoopWithoutHostCalls(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, nimbusrt.Spec{}, spinModule()))
	done := make(chan error, 1)
	go func() {
		_, err := invoke(t, in, request("GET", "/", nil), 300*time.Millisecond)
		done <- err
	}()
	// Collections need every goroutine to stop, the spinning guest's too:
	// they must keep completing while it runs.
	for {
		runtime.GC()
		select {
		case err := <-done:
			wantKind(t, err, nimbusrt.TimedOut, "deadline")
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestInterruptCheckedAtLoops(t *testing.T) {
	code := spinModule()
	info, err := parseModule(code)
	if err != nil {
		t.Fatal(err)
	}
	out, err := addInterrupt(code, info)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseModule(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.exports[interruptExport] != kindGlobal {
		t.Fatalf("rewritten module does not export the %s global: %v", interruptExport, got.exports)
	}
	for _, name := range []string{"memory", "nimbus_abi_version_1", "nimbus_handle"} {
		if _, ok := got.exports[name]; !ok {
			t.Fatalf("rewritten module lost export %s", name)
		}
	}
	if _, err := addInterrupt(out, got); err == nil {
		t.Fatal("a module that already exports the interrupt global was accepted")
	}
}

// The warm path takes its deadline from the request: the caller's context
// need not carry one (the invoke pipeline passes it without).
func TestRequestDeadlineStopsGuest(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, nimbusrt.Spec{}, guestMod.get(t))
	for _, path := range []string{"/loop", "/sleep"} {
		t.Run(path, func(t *testing.T) {
			in := newInstance(t, tpl)
			req := request("GET", path, nil)
			req.Deadline = time.Now().Add(300 * time.Millisecond)
			err := in.Invoke(context.Background(), req, newRecorder())
			wantKind(t, err, nimbusrt.TimedOut, "deadline")
		})
	}
}

// A call whose caller goes away stops, in a loop or in a sleep, long before
// its deadline.
func TestCanceledCallStops(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, nimbusrt.Spec{}, guestMod.get(t))
	for _, path := range []string{"/loop", "/sleep"} {
		t.Run(path, func(t *testing.T) {
			in := newInstance(t, tpl)
			req := request("GET", path, nil)
			req.Deadline = time.Now().Add(time.Hour)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			err := in.Invoke(ctx, req, newRecorder())
			wantKind(t, err, nimbusrt.Crashed, "canceled")
			// The next call on a new instance is not affected.
			mustInvoke(t, newInstance(t, tpl), request("GET", "/count", nil))
		})
	}
}

// An instance's timer outlives the call that set it: the next call's
// deadline still holds when it comes before the timer's, and after it.
func TestDeadlineAfterEarlierCall(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, nimbusrt.Spec{}, guestMod.get(t))
	for _, first := range []time.Duration{time.Hour, 20 * time.Millisecond} {
		in := newInstance(t, tpl)
		req := request("GET", "/count", nil)
		req.Deadline = time.Now().Add(first) // the timer is left due then: ctx has no Done to check
		if err := in.Invoke(context.Background(), req, newRecorder()); err != nil {
			t.Fatal(err)
		}
		req = request("GET", "/loop", nil)
		req.Deadline = time.Now().Add(300 * time.Millisecond)
		start := time.Now()
		err := in.Invoke(context.Background(), req, newRecorder())
		wantKind(t, err, nimbusrt.TimedOut, "deadline")
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("first deadline %v: the loop ran %v past a 300ms deadline", first, d)
		}
	}
}
