package wasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Snapshot instances without a function table.
//
// A standard Go module fills its function table with ~1,800 entries from
// an element segment, and wazero evaluates that segment entry by entry on
// every instantiation: about half of a snapshot instance's start-up CPU and
// ~9,000 of its allocations went there. The table serves call_indirect
// only, so the module a snapshot serves replaces the table with code: every
// call_indirect of type T becomes a direct call of a dispatch function
// whose br_table maps each table index to a direct call of the entry's
// function (or to a trap, where call_indirect would trap: a null entry, an
// index past the table, or a function of another type). Function indices
// do not change, so the code pointers Go keeps in linear memory (table
// indices) stay valid. The rewrite applies only when the table is used by
// nothing else; otherwise the module keeps its table.

// Further section ids.
const (
	secType     byte = 1
	secImport   byte = 2
	secFunction byte = 3
	secTable    byte = 4
	secElement  byte = 9
)

// tableUse is what withoutTable learns about a module's only table.
type tableUse struct {
	entries   []int32  // function index per table slot; -1: null
	types     [][]byte // encoded function types, by type index
	funcTypes []uint32 // type index per function (imported first)
	imported  uint32   // imported functions
	defined   uint32   // functions the module defines
}

// withoutTable returns secs with the function table replaced by dispatch
// functions, or ok false (and secs as they are) when the module does not
// qualify: no table, more than one, an imported or exported table, table
// instructions other than call_indirect, ref.func, or element segments
// other than active funcref vectors at constant offsets.
func withoutTable(secs []wasmSection) (_ []wasmSection, ok bool, err error) {
	var u tableUse
	var tableMin uint32
	var haveTable, haveElems bool
	for _, s := range secs {
		r := reader{b: s.body}
		switch s.id {
		case secType:
			if u.types, err = readTypes(&r); err != nil {
				return secs, false, err
			}
		case secImport:
			var info moduleInfo
			if err := parseImports(&r, &info); err != nil {
				return secs, false, err
			}
			for _, im := range info.imports {
				if im.kind != kindFunc {
					return secs, false, nil
				}
				u.funcTypes = append(u.funcTypes, im.typ)
				u.imported++
			}
		case secFunction:
			n, err := r.u32()
			if err != nil {
				return secs, false, err
			}
			for range n {
				t, err := r.u32()
				if err != nil {
					return secs, false, err
				}
				u.funcTypes = append(u.funcTypes, t)
			}
			u.defined = n
		case secTable:
			n, err := r.u32()
			if err != nil || n != 1 {
				return secs, false, err
			}
			if rt, err := r.byte(); err != nil || rt != 0x70 {
				return secs, false, err
			}
			flags, err := r.byte()
			if err != nil || flags > 1 {
				return secs, false, err
			}
			if tableMin, err = r.u32(); err != nil {
				return secs, false, err
			}
			haveTable = true
		case secExport:
			info := moduleInfo{exports: map[string]byte{}}
			if err := parseExports(&r, &info); err != nil {
				return secs, false, err
			}
			for _, kind := range info.exports {
				if kind == kindTable {
					return secs, false, nil
				}
			}
		case secElement:
			haveElems = true
		}
	}
	if !haveTable || tableMin > 1<<16 {
		return secs, false, nil
	}
	u.entries = make([]int32, tableMin)
	for i := range u.entries {
		u.entries[i] = -1
	}
	if haveElems {
		for _, s := range secs {
			if s.id == secElement {
				if ok, err := u.readElements(s.body); !ok || err != nil {
					return secs, false, err
				}
			}
		}
	}
	var code []byte
	for _, s := range secs {
		if s.id == secCode {
			code = s.body
		}
	}
	// Which types call_indirect uses, in order of first use; refuse any
	// other table use.
	used, ok, err := indirectTypes(code)
	if !ok || err != nil {
		return secs, false, err
	}
	for _, t := range used {
		if int(t) >= len(u.types) {
			return secs, false, fmt.Errorf("call_indirect of type %d: no such type", t)
		}
	}
	// One dispatch function (and one new type: T's params, then the
	// index) per used type, after every existing function and type.
	dispatch := map[uint32]uint32{} // type index -> dispatch function index
	var newTypes, newFuncs, newBodies [][]byte
	for i, t := range used {
		dispatch[t] = u.imported + u.defined + uint32(i)
		params, results := splitFuncType(u.types[t])
		dt := []byte{0x60}
		dt = binary.AppendUvarint(dt, uint64(len(params)+1))
		dt = append(dt, params...)
		dt = append(dt, 0x7f)
		dt = binary.AppendUvarint(dt, uint64(len(results)))
		dt = append(dt, results...)
		newTypes = append(newTypes, dt)
		newFuncs = append(newFuncs, binary.AppendUvarint(nil, uint64(len(u.types)+i)))
		newBodies = append(newBodies, u.dispatchBody(u.types[t], len(params)))
	}
	body, err := replaceIndirectCalls(code, dispatch)
	if err != nil {
		return secs, false, err
	}
	out := make([]wasmSection, 0, len(secs)+1)
	for _, s := range secs {
		switch s.id {
		case secTable, secElement:
			continue
		case secType:
			s.body = appendEntries(s.body, newTypes)
		case secFunction:
			s.body = appendEntries(s.body, newFuncs)
		case secCode:
			s.body = appendEntries(body, newBodies)
		}
		out = append(out, s)
	}
	return out, true, nil
}

// readTypes reads a type section into the encoded entries.
func readTypes(r *reader) ([][]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	types := make([][]byte, 0, n)
	for range n {
		start := r.b
		if form, err := r.byte(); err != nil || form != 0x60 {
			return nil, fmt.Errorf("type %d is not a function type", len(types))
		}
		for range 2 { // params, results
			k, err := r.u32()
			if err != nil {
				return nil, err
			}
			if _, err := r.bytes(int(k)); err != nil {
				return nil, err
			}
		}
		types = append(types, start[:len(start)-len(r.b)])
	}
	return types, nil
}

// splitFuncType returns the parameter and result value types of an encoded
// function type (0x60 vec(params) vec(results); value types are one byte).
func splitFuncType(t []byte) (params, results []byte) {
	r := reader{b: t[1:]}
	np, _ := r.u32()
	params, _ = r.bytes(int(np))
	nr, _ := r.u32()
	results, _ = r.bytes(int(nr))
	return params, results
}

// readElements applies an element section's segments to u.entries. Only
// active segments of function indices at an i32.const offset (flags 0, or
// 2 with table 0 and kind funcref) qualify.
func (u *tableUse) readElements(body []byte) (bool, error) {
	r := reader{b: body}
	n, err := r.u32()
	if err != nil {
		return false, err
	}
	for range n {
		flags, err := r.u32()
		if err != nil {
			return false, err
		}
		switch flags {
		case 0:
		case 2:
			if t, err := r.u32(); err != nil || t != 0 {
				return false, err
			}
		default:
			return false, nil
		}
		if op, err := r.byte(); err != nil || op != 0x41 {
			return false, err
		}
		off, err := r.s32()
		if err != nil {
			return false, err
		}
		if end, err := r.byte(); err != nil || end != 0x0b {
			return false, err
		}
		if flags == 2 {
			if kind, err := r.byte(); err != nil || kind != 0 {
				return false, err
			}
		}
		k, err := r.u32()
		if err != nil {
			return false, err
		}
		if off < 0 || int64(off)+int64(k) > int64(len(u.entries)) {
			return false, nil // instantiation would fail: leave it to wazero
		}
		for i := range k {
			f, err := r.u32()
			if err != nil {
				return false, err
			}
			if int(f) >= len(u.funcTypes) {
				return false, fmt.Errorf("element names function %d of %d", f, len(u.funcTypes))
			}
			u.entries[uint32(off)+i] = int32(f)
		}
	}
	return true, nil
}

// indirectTypes returns the type indices call_indirect uses in a code
// section, in order of first use, and false if the code uses the table in
// any other way (or uses ref.func, which needs the element section).
func indirectTypes(code []byte) ([]uint32, bool, error) {
	var used []uint32
	seen := map[uint32]bool{}
	err := eachInstr(code, func(instr []byte) error {
		switch op := instr[0]; {
		case op == 0x11:
			r := reader{b: instr[1:]}
			t, _ := r.u32()
			if table, _ := r.u32(); table != 0 {
				return errOtherTableUse
			}
			if !seen[t] {
				seen[t] = true
				used = append(used, t)
			}
		case op == 0x13, op == 0x25, op == 0x26, op == 0xd2:
			return errOtherTableUse
		case op == 0xfc:
			r := reader{b: instr[1:]}
			if sub, _ := r.u32(); sub >= 12 && sub <= 17 {
				return errOtherTableUse
			}
		}
		return nil
	})
	if err == errOtherTableUse {
		return nil, false, nil
	}
	return used, err == nil, err
}

// errOtherTableUse stops indirectTypes at code that needs the table.
var errOtherTableUse = errors.New("the code uses the table beyond call_indirect")

// eachInstr calls f with every instruction of every function body in a
// code section, and stops at the first error f returns.
func eachInstr(code []byte, f func(instr []byte) error) error {
	r := reader{b: code}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for range n {
		size, err := r.u32()
		if err != nil {
			return err
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return err
		}
		b := reader{b: body}
		if err := skipLocals(&b); err != nil {
			return err
		}
		for len(b.b) > 0 {
			start := b.b
			if _, err := nextInstr(&b); err != nil {
				return err
			}
			if err := f(start[:len(start)-len(b.b)]); err != nil {
				return err
			}
		}
	}
	return nil
}

func skipLocals(b *reader) error {
	locals, err := b.u32()
	if err != nil {
		return err
	}
	for range locals {
		if _, err := b.u32(); err != nil {
			return err
		}
		if _, err := b.byte(); err != nil {
			return err
		}
	}
	return nil
}

// replaceIndirectCalls rewrites a code section with every call_indirect of
// type T as a call of dispatch[T].
func replaceIndirectCalls(code []byte, dispatch map[uint32]uint32) ([]byte, error) {
	return rewriteCode(code, 0, func(fn []byte, op byte, instr []byte) []byte {
		if op != 0x11 {
			return append(fn, instr...)
		}
		ir := reader{b: instr[1:]}
		t, _ := ir.u32()
		fn = append(fn, 0x10)
		return binary.AppendUvarint(fn, uint64(dispatch[t]))
	})
}

// rewriteCode rewrites every function body of a code section instruction by
// instruction: emit appends to fn what replaces instr (op is its first
// byte). grow is a hint of how much longer the section gets.
func rewriteCode(sec []byte, grow int, emit func(fn []byte, op byte, instr []byte) []byte) ([]byte, error) {
	r := reader{b: sec}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(make([]byte, 0, len(sec)+grow), uint64(n))
	var fn []byte
	for i := range n {
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return nil, err
		}
		b := reader{b: body}
		if err := skipLocals(&b); err != nil {
			return nil, err
		}
		fn = append(fn[:0], body[:len(body)-len(b.b)]...)
		for len(b.b) > 0 {
			start := b.b
			op, err := nextInstr(&b)
			if err != nil {
				return nil, fmt.Errorf("function %d: %w", i, err)
			}
			fn = emit(fn, op, start[:len(start)-len(b.b)])
		}
		out = binary.AppendUvarint(out, uint64(len(fn)))
		out = append(out, fn...)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last function", len(r.b))
	}
	return out, nil
}

// dispatchBody is the body of the dispatch function for call_indirect of
// type t (nparams parameters, then the table index as local nparams):
//
//	block                 ;; trap
//	  block               ;; case k-1
//	    …
//	      block           ;; case 0
//	        local.get $index
//	        br_table …    ;; slot -> case, else trap
//	      end
//	      local.get 0 … local.get nparams-1
//	      call $f0
//	      return
//	    …
//	end
//	unreachable
func (u *tableUse) dispatchBody(t []byte, nparams int) []byte {
	// Cases: the distinct functions of type t in the table, by first slot.
	caseOf := map[int32]int{}
	var cases []int32
	for _, f := range u.entries {
		if f < 0 || !bytes.Equal(u.types[u.funcTypes[f]], t) {
			continue
		}
		if _, ok := caseOf[f]; !ok {
			caseOf[f] = len(cases)
			cases = append(cases, f)
		}
	}
	k := len(cases)
	b := []byte{0} // no locals
	for range k + 1 {
		b = append(b, 0x02, 0x40)
	}
	b = append(b, 0x20)
	b = binary.AppendUvarint(b, uint64(nparams))
	b = append(b, 0x0e)
	b = binary.AppendUvarint(b, uint64(len(u.entries)))
	for _, f := range u.entries {
		label := k // trap
		if c, ok := caseOf[f]; ok && f >= 0 {
			label = c
		}
		b = binary.AppendUvarint(b, uint64(label))
	}
	b = binary.AppendUvarint(b, uint64(k)) // past the table: trap
	for _, f := range cases {
		b = append(b, 0x0b) // end of this case's block
		for p := range nparams {
			b = append(b, 0x20)
			b = binary.AppendUvarint(b, uint64(p))
		}
		b = append(b, 0x10)
		b = binary.AppendUvarint(b, uint64(f))
		b = append(b, 0x0f) // return
	}
	b = append(b, 0x0b, 0x00, 0x0b) // end of the trap block; unreachable; end
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// appendEntries adds encoded entries to a vector section body.
func appendEntries(vec []byte, entries [][]byte) []byte {
	if len(entries) == 0 {
		return vec
	}
	r := reader{b: vec}
	n, err := r.u32()
	if err != nil {
		return vec
	}
	out := binary.AppendUvarint(make([]byte, 0, len(vec)+16), uint64(n)+uint64(len(entries)))
	out = append(out, r.b...)
	return append(out, bytes.Join(entries, nil)...)
}
