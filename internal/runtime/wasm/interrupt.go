package wasm

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Deadlines. A guest call must end when its context does (deadline, caller
// gone, instance closed), even in a loop that never calls the host. wazero's
// own mechanism (RuntimeConfig.WithCloseOnContextDone) leaves compiled code
// at every loop header through a trampoline into Go; Go-compiled guests run a
// loop in nearly every function, which made a warm call several times
// slower. Instead, every module gets two more mutable i32 globals, an
// interrupt flag (exported as interruptExport) and a loop counter, and every
// loop header runs:
//
//	global.get $count
//	i32.const 1
//	i32.add
//	global.set $count
//	global.get $count
//	i32.const 4095
//	i32.and
//	i32.eqz
//	if                  ;; every 4096th loop iteration
//	  global.get $interrupt
//	  if
//	    unreachable     ;; the host asked the call to stop
//	  end
//	  i32.const 0
//	  memory.grow       ;; returns to Go for a moment, see below
//	  drop
//	end
//
// The host sets the flag when the call's context is done (or the instance
// closes); the guest traps within 4096 iterations and the instance is
// discarded, as after any trap. Compiled guest code cannot be preempted by
// the Go scheduler, so a guest that never leaves it would hold up every
// stop-the-world phase of the garbage collector, and with it the timer that
// sets the flag: the memory.grow of 0 pages is a cheap exit to Go that lets
// the scheduler stop the goroutine there.

// interruptExport names the global that stops a running guest.
const interruptExport = "nimbus.interrupt"

// addInterrupt returns code with the interrupt global and its checks. info
// is code's parsed import/export summary.
func addInterrupt(code []byte, info *moduleInfo) ([]byte, error) {
	if _, taken := info.exports[interruptExport]; taken {
		return nil, runtime.Errorf(runtime.BadCode, "module exports %q, a name Nimbus reserves", interruptExport)
	}
	importedGlobals := 0
	for _, im := range info.imports {
		if im.kind == kindGlobal {
			importedGlobals++
		}
	}
	secs, err := splitSections(code)
	if err != nil {
		return nil, badModule(err)
	}
	// The new global comes after every imported and defined one, so no
	// existing index changes.
	definedGlobals := 0
	for _, s := range secs {
		if s.id == secGlobal {
			r := reader{b: s.body}
			n, err := r.u32()
			if err != nil {
				return nil, badModule(err)
			}
			definedGlobals = int(n)
		}
	}
	idx := uint32(importedGlobals + definedGlobals)
	count := binary.AppendUvarint(nil, uint64(idx+1))
	check := append([]byte{0x23}, count...)             // global.get $count
	check = append(check, 0x41, 0x01, 0x6a, 0x24)       // i32.const 1; i32.add; global.set
	check = append(check, count...)                     // $count
	check = append(check, 0x23)                         // global.get
	check = append(check, count...)                     // $count
	check = append(check, 0x41, 0xff, 0x1f, 0x71, 0x45) // i32.const 4095; i32.and; i32.eqz
	check = append(check, 0x04, 0x40)                   // if
	check = append(check, 0x23)                         // global.get
	check = binary.AppendUvarint(check, uint64(idx))    // $interrupt
	check = append(check, 0x04, 0x40, 0x00, 0x0b)       // if; unreachable; end
	if info.memMin >= 0 {
		check = append(check, 0x41, 0x00, 0x40, 0x00, 0x1a) // i32.const 0; memory.grow 0; drop
	}
	check = append(check, 0x0b) // end

	newGlobal := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b} // mut i32 = i32.const 0 (twice: flag and counter)
	newGlobal = append(newGlobal, newGlobal...)
	newExport := appendName(nil, interruptExport)
	newExport = append(newExport, kindGlobal)
	newExport = binary.AppendUvarint(newExport, uint64(idx))
	var haveGlobals, haveExports bool
	for i, s := range secs {
		switch s.id {
		case secGlobal:
			secs[i].body = appendToVector(s.body, newGlobal, 2)
			haveGlobals = true
		case secExport:
			secs[i].body = appendToVector(s.body, newExport, 1)
			haveExports = true
		case secCode:
			body, err := addLoopChecks(s.body, check)
			if err != nil {
				return nil, &runtime.Error{Kind: runtime.BadCode, Message: "module does not compile: " + err.Error(), Err: err}
			}
			secs[i].body = body
		}
	}
	if !haveGlobals {
		secs = insertSection(secs, wasmSection{secGlobal, append([]byte{2}, newGlobal...)})
	}
	if !haveExports {
		secs = insertSection(secs, wasmSection{secExport, append([]byte{1}, newExport...)})
	}
	return joinSections(secs), nil
}

// appendToVector adds entries (encoded in entry) to a section that is a vector.
func appendToVector(vec, entry []byte, entries int) []byte {
	r := reader{b: vec}
	n, err := r.u32()
	if err != nil {
		// The module does not compile; keep it as it is for wazero to say why.
		return vec
	}
	out := binary.AppendUvarint(make([]byte, 0, len(vec)+len(entry)+1), uint64(n)+uint64(entries))
	out = append(out, r.b...)
	return append(out, entry...)
}

// addLoopChecks rewrites a code section with check after every loop's block type.
func addLoopChecks(sec, check []byte) ([]byte, error) {
	return rewriteCode(sec, len(sec)/16, func(fn []byte, op byte, instr []byte) []byte {
		fn = append(fn, instr...)
		if op == 0x03 { // loop
			fn = append(fn, check...)
		}
		return fn
	})
}

// nextInstr reads one instruction of any kind wazero compiles and returns
// its first opcode byte.
func nextInstr(r *reader) (byte, error) {
	op, err := r.byte()
	if err != nil {
		return 0, err
	}
	switch {
	case op == 0x00, op == 0x01, op == 0x05, op == 0x0a, op == 0x0b, op == 0x0f, op == 0x19, op == 0x1a, op == 0x1b,
		op == 0xd1, op >= 0x45 && op <= 0xc4:
		return op, nil
	case op == 0x02, op == 0x03, op == 0x04, op == 0x06: // block type: 0x40, a value type, or an s33 type index
		if len(r.b) > 0 && (r.b[0] == 0x40 || (r.b[0] >= 0x6f && r.b[0] <= 0x7f)) {
			_, err = r.byte()
		} else {
			err = r.skipLEB()
		}
	case op == 0x07, op == 0x08, op == 0x09, op == 0x0c, op == 0x0d, op == 0x10, op == 0x12, op == 0x18,
		op >= 0x20 && op <= 0x26, op == 0xd2:
		_, err = r.u32()
	case op == 0x0e:
		var n uint32
		if n, err = r.u32(); err == nil {
			err = r.skipU32s(int(n) + 1)
		}
	case op == 0x11, op == 0x13:
		err = r.skipU32s(2)
	case op == 0x1c:
		var n uint32
		if n, err = r.u32(); err == nil {
			_, err = r.bytes(int(n))
		}
	case op == 0x1f: // try_table: block type, then catch clauses
		if len(r.b) > 0 && (r.b[0] == 0x40 || (r.b[0] >= 0x6f && r.b[0] <= 0x7f)) {
			_, err = r.byte()
		} else {
			err = r.skipLEB()
		}
		var n uint32
		if err == nil {
			n, err = r.u32()
		}
		for i := uint32(0); err == nil && i < n; i++ {
			var kind byte
			if kind, err = r.byte(); err == nil {
				if kind <= 1 {
					err = r.skipU32s(2) // tag, label
				} else {
					_, err = r.u32() // label
				}
			}
		}
	case op >= 0x28 && op <= 0x3e:
		err = r.skipU32s(2)
	case op == 0x3f, op == 0x40:
		_, err = r.u32()
	case op == 0x41, op == 0x42:
		err = r.skipLEB()
	case op == 0x43:
		_, err = r.bytes(4)
	case op == 0x44:
		_, err = r.bytes(8)
	case op == 0xd0:
		_, err = r.byte()
	case op == 0xfc:
		var sub uint32
		if sub, err = r.u32(); err != nil {
			return op, err
		}
		switch {
		case sub <= 7:
		case sub == 8, sub == 10, sub == 12, sub == 14:
			err = r.skipU32s(2)
		case sub == 9, sub == 11, sub == 13, sub == 15, sub == 16, sub == 17:
			_, err = r.u32()
		default:
			err = fmt.Errorf("unknown instruction 0xfc %d", sub)
		}
	case op == 0xfd: // SIMD
		var sub uint32
		if sub, err = r.u32(); err != nil {
			return op, err
		}
		switch {
		case sub <= 11, sub == 92, sub == 93: // loads and stores
			err = r.skipU32s(2)
		case sub == 12, sub == 13: // v128.const, i8x16.shuffle
			_, err = r.bytes(16)
		case sub >= 21 && sub <= 34: // lane extract and replace
			_, err = r.byte()
		case sub >= 84 && sub <= 91: // lane loads and stores
			if err = r.skipU32s(2); err == nil {
				_, err = r.byte()
			}
		}
	case op == 0xfe: // threads
		var sub uint32
		if sub, err = r.u32(); err != nil {
			return op, err
		}
		if sub == 3 { // atomic.fence
			_, err = r.byte()
		} else {
			err = r.skipU32s(2)
		}
	default:
		return op, fmt.Errorf("unknown instruction %#x", op)
	}
	return op, err
}

// interrupter stops one instance's guest calls when their context is done.
type interrupter struct {
	g api.MutableGlobal // nil for a module without the global (never: every module gets one)

	mu  sync.Mutex
	gen uint64 // counts calls, so that a late stop of a finished call is ignored

	// The call watched by watch (nil ctx: none) and its reusable timer,
	// which is pending until due. A call that ends leaves the timer be: it
	// fires once for nothing, rather than every call paying to stop it and
	// set it again.
	ctx      context.Context
	deadline time.Time
	timer    *time.Timer
	pending  bool
	due      time.Time
}

func newInterrupter(mod api.Module) *interrupter {
	g, _ := mod.ExportedGlobal(interruptExport).(api.MutableGlobal)
	return &interrupter{g: g}
}

// arm clears the flag and sets it when ctx is done; the returned function
// disarms. A flag set once stays set for the call: the instance then traps.
func (it *interrupter) arm(ctx context.Context) (disarm func()) {
	if it.g == nil {
		return noop
	}
	it.mu.Lock()
	it.gen++
	gen := it.gen
	it.g.Set(0)
	it.mu.Unlock()
	if ctx.Done() == nil {
		return noop
	}
	stop := context.AfterFunc(ctx, func() {
		it.mu.Lock()
		if it.gen == gen {
			it.g.Set(1)
		}
		it.mu.Unlock()
	})
	return func() { stop() }
}

// cancelCheck is how often watch looks at a watched call's context before
// its deadline: a guest computing for a caller that went away stops within
// this time (one in a host call or a sleep at once, see invokeCtx).
const cancelCheck = 50 * time.Millisecond

// watch is arm for the warm path, without allocations: it clears the flag
// and sets it at deadline (if not zero) or once ctx is done, which a timer
// of the interrupter's own checks every cancelCheck. unwatch ends it.
func (it *interrupter) watch(ctx context.Context, deadline time.Time) {
	if it.g == nil {
		return
	}
	it.mu.Lock()
	it.gen++
	it.g.Set(0)
	if ctx.Done() != nil || !deadline.IsZero() {
		it.ctx, it.deadline = ctx, deadline
		it.schedule()
	}
	it.mu.Unlock()
}

// schedule makes sure the timer fires by the next check of the watched
// call: it keeps a pending timer that is due no later; it.mu is held.
func (it *interrupter) schedule() {
	now := time.Now()
	at := now.Add(cancelCheck)
	if !it.deadline.IsZero() && (it.deadline.Before(at) || it.ctx.Done() == nil) {
		at = it.deadline // nothing to watch but the deadline, or it comes first
	}
	if it.pending && !it.due.After(at) {
		return
	}
	it.pending, it.due = true, at
	if it.timer == nil {
		it.timer = time.AfterFunc(at.Sub(now), it.check)
	} else {
		it.timer.Reset(at.Sub(now))
	}
}

// check runs on the timer: it stops the watched call if its time is up or
// its context is done, and looks again later otherwise.
func (it *interrupter) check() {
	it.mu.Lock()
	defer it.mu.Unlock()
	if d := time.Until(it.due); d > 0 {
		it.timer.Reset(d) // early, for a Reset that raced with this run
		return
	}
	it.pending = false
	if it.ctx == nil {
		return // the call ended
	}
	if it.ctx.Err() != nil || (!it.deadline.IsZero() && !time.Now().Before(it.deadline)) {
		it.g.Set(1)
		it.ctx = nil
		return
	}
	it.schedule()
}

// unwatch ends watch.
func (it *interrupter) unwatch() {
	if it.g == nil {
		return
	}
	it.mu.Lock()
	it.ctx = nil
	it.mu.Unlock()
}

func noop() {}

// stopNow makes a running call (and any later one) trap at its next loop.
func (it *interrupter) stopNow() {
	if it.g == nil {
		return
	}
	it.mu.Lock()
	it.gen++
	it.g.Set(1)
	it.ctx = nil
	it.mu.Unlock()
}
