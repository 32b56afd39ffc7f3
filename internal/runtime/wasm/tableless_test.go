package wasm

import (
	"context"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// tableModule assembles a module whose table holds, from slot 0: null,
// double (i32)->i32, sum (i32,i32)->i32, neg (a second, identical
// (i32)->i32 type), the imported add100 (i32)->i32, null, double, null.
// callA(idx, x) and callB(idx, a, b) call slot idx through call_indirect
// of (i32)->i32 and (i32,i32)->i32; extraExports are added to the exports.
func tableModule(extraExports ...[]byte) []byte {
	types := section(1, vec(
		[]byte{0x60, 1, 0x7f, 1, 0x7f},             // 0: (i32)->i32
		[]byte{0x60, 2, 0x7f, 0x7f, 1, 0x7f},       // 1: (i32,i32)->i32
		[]byte{0x60, 1, 0x7f, 1, 0x7f},             // 2: (i32)->i32 again
		[]byte{0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f}, // 3: (i32,i32,i32)->i32
	))
	imports := section(2, vec(cat(wname("env"), wname("add100"), []byte{0, 0}))) // func 0
	funcs := section(3, vec([]byte{0}, []byte{1}, []byte{2}, []byte{1}, []byte{3}))
	table := section(4, vec([]byte{0x70, 0, 8}))
	exps := [][]byte{cat(wname("callA"), []byte{0}, leb(4)), cat(wname("callB"), []byte{0}, leb(5))}
	exports := section(7, vec(append(exps, extraExports...)...))
	elems := section(9, vec(
		cat([]byte{0, 0x41, 1, 0x0b}, vec(leb(1), leb(2), leb(3), leb(0))),
		cat([]byte{2, 0, 0x41, 6, 0x0b, 0}, vec(leb(1))),
	))
	body := func(code ...byte) []byte { return append(leb(uint32(len(code)+1)), append([]byte{0}, code...)...) }
	code := section(10, vec(
		body(0x20, 0, 0x41, 2, 0x6c, 0x0b),                               // 1 double: x*2
		body(0x20, 0, 0x20, 1, 0x6a, 0x0b),                               // 2 sum: a+b
		body(0x41, 0, 0x20, 0, 0x6b, 0x0b),                               // 3 neg: 0-x
		body(0x20, 1, 0x20, 0, 0x11, 0, 0, 0x0b),                         // 4 callA(idx, x)
		body(0x20, 1, 0x20, 2, 0x20, 0, 0x11, 1, 0, 0x41, 1, 0x6a, 0x0b), // 5 callB(idx, a, b) + 1
	))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, imports, funcs, table, exports, elems, code)
}

func tablelessOf(t *testing.T, code []byte) ([]byte, bool) {
	t.Helper()
	secs, err := splitSections(code)
	if err != nil {
		t.Fatal(err)
	}
	out, ok, err := withoutTable(secs)
	if err != nil {
		t.Fatal(err)
	}
	return joinSections(out), ok
}

// Every slot answers through the dispatch functions exactly as through the
// table: the same results, and a trap wherever call_indirect traps (null
// slots, slots of another type, indices past the table).
func TestWithoutTableCallsAlike(t *testing.T) {
	plain := tableModule()
	rewritten, ok := tablelessOf(t, plain)
	if !ok {
		t.Fatal("the module did not qualify")
	}
	secs, err := splitSections(rewritten)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if s.id == secTable || s.id == secElement {
			t.Fatalf("section %d left in the rewritten module", s.id)
		}
	}
	ctx := context.Background()
	call := func(code []byte) func(fn string, args ...uint64) string {
		rt := wazero.NewRuntime(ctx)
		t.Cleanup(func() { _ = rt.Close(ctx) })
		_, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, s []uint64) { s[0] = uint64(uint32(s[0]) + 100) }),
				[]api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("add100").Instantiate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mod, err := rt.Instantiate(ctx, code)
		if err != nil {
			t.Fatal(err)
		}
		return func(fn string, args ...uint64) string {
			res, err := mod.ExportedFunction(fn).Call(ctx, args...)
			if err != nil {
				return "trap"
			}
			return fmt.Sprint(int32(res[0]))
		}
	}
	a, b := call(plain), call(rewritten)
	traps := 0
	for idx := uint64(0); idx < 11; idx++ {
		for _, c := range []struct {
			fn   string
			args []uint64
		}{{"callA", []uint64{idx, 7}}, {"callB", []uint64{idx, 3, 4}}} {
			want, got := a(c.fn, c.args...), b(c.fn, c.args...)
			if got != want {
				t.Errorf("%s(%v): %s through the table, %s through dispatch", c.fn, c.args, want, got)
			}
			if want == "trap" {
				traps++
			}
		}
	}
	// Slots 1 (double), 3 (neg), 4 (add100) and 6 (double) answer callA;
	// slot 2 (sum) answers callB; everything else traps.
	if traps != 22-5 {
		t.Errorf("%d traps, want 17", traps)
	}
	if got := b("callA", 4, 7); got != "107" {
		t.Errorf("callA through the imported function = %s, want 107", got)
	}
}

// A module whose table is exported (or used in any way besides
// call_indirect) keeps it.
func TestWithoutTableRefuses(t *testing.T) {
	if _, ok := tablelessOf(t, tableModule(cat(wname("table"), []byte{1, 0}))); ok {
		t.Error("rewrote a module that exports its table")
	}
	if _, ok := tablelessOf(t, tinyModule(nil, "nimbus_handle!i32")); ok {
		t.Error("rewrote a module without a table")
	}
}

// The module a Go function's snapshot serves has no table and no element
// segments left to evaluate per instance.
func TestSnapshotOfGoHasNoTable(t *testing.T) {
	r := newRuntime(t)
	snap, _, err := r.SnapshotModule(context.Background(), &runtime.Spec{Function: "hello", Version: 1, Runtime: runtime.Wasm}, helloMod.get(t))
	if err != nil {
		t.Fatal(err)
	}
	before, err := splitSections(snap)
	if err != nil {
		t.Fatal(err)
	}
	hadTable := false
	for _, s := range before {
		hadTable = hadTable || s.id == secTable
	}
	if !hadTable {
		t.Fatal("the Go module has no table to begin with")
	}
	split, _, err := splitSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := splitSections(split)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if s.id == secTable || s.id == secElement {
			t.Fatalf("section %d left in the served snapshot", s.id)
		}
	}
}
