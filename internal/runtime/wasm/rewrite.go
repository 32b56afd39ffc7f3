package wasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
)

// This file reads and rewrites module binaries for snapshots: it exports
// every mutable global (wazero reads only exported globals), and emits a
// module whose memory and globals start in a captured state.

// Section ids of the WebAssembly binary format.
const (
	secCustom    byte = 0
	secGlobal    byte = 6
	secExport    byte = 7
	secStart     byte = 8
	secMemory    byte = 5
	secCode      byte = 10
	secData      byte = 11
	secDataCount byte = 12
)

// sectionOrder is the order in which non-custom sections must appear.
var sectionOrder = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 13: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

type wasmSection struct {
	id   byte
	body []byte
}

// snapGlobal is one global of the module's global section.
type snapGlobal struct {
	valType byte
	mutable bool
	raw     []byte // the whole entry as encoded: type, mutability, init expr
}

// snapModule is a module split into sections, with what a snapshot needs.
type snapModule struct {
	sections []wasmSection
	globals  []snapGlobal
	memFlags byte
	memMax   uint32
}

// errNoSnapshot marks a module that cannot be snapshotted; it then runs plain.
type errNoSnapshot struct{ reason string }

func (e *errNoSnapshot) Error() string { return "module cannot be snapshotted: " + e.reason }

func noSnapshot(format string, args ...any) error {
	return &errNoSnapshot{reason: fmt.Sprintf(format, args...)}
}

// analyseForSnapshot splits code into sections and checks that a snapshot of
// it is faithful: no passive data segments, no table mutation, no imported
// globals, no mutable globals of reference or vector type, and only
// instructions this reader knows.
func analyseForSnapshot(code []byte) (*snapModule, error) {
	secs, err := splitSections(code)
	if err != nil {
		return nil, err
	}
	m := &snapModule{sections: secs}
	for _, sec := range secs {
		s := reader{b: sec.body}
		switch sec.id {
		case 2:
			if err := checkImportsForSnapshot(&s); err != nil {
				return nil, err
			}
		case secMemory:
			if err := m.readMemory(&s); err != nil {
				return nil, err
			}
		case secGlobal:
			if err := m.readGlobals(&s); err != nil {
				return nil, err
			}
		case secCode:
			if err := scanCode(&s); err != nil {
				return nil, err
			}
		case secData:
			if err := checkData(&s); err != nil {
				return nil, err
			}
		}
	}
	if m.section(secMemory) == nil {
		return nil, noSnapshot("it defines no memory")
	}
	return m, nil
}

func (m *snapModule) section(id byte) []byte {
	for _, s := range m.sections {
		if s.id == id {
			return s.body
		}
	}
	return nil
}

func checkImportsForSnapshot(r *reader) error {
	var info moduleInfo
	if err := parseImports(r, &info); err != nil {
		return err
	}
	for _, im := range info.imports {
		if im.kind != kindFunc {
			return noSnapshot("it imports a %s", kindName(im.kind))
		}
	}
	return nil
}

func (m *snapModule) readMemory(r *reader) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	if n != 1 {
		return noSnapshot("it defines %d memories", n)
	}
	if m.memFlags, err = r.byte(); err != nil {
		return err
	}
	if m.memFlags&^0x01 != 0 {
		return noSnapshot("its memory has flags %#x (shared or 64-bit)", m.memFlags)
	}
	if _, err := r.u32(); err != nil {
		return err
	}
	if m.memFlags&0x01 != 0 {
		if m.memMax, err = r.u32(); err != nil {
			return err
		}
	}
	return nil
}

func (m *snapModule) readGlobals(r *reader) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for range n {
		start := r.b
		vt, err := r.byte()
		if err != nil {
			return err
		}
		mut, err := r.byte()
		if err != nil {
			return err
		}
		if err := skipExpr(r); err != nil {
			return err
		}
		g := snapGlobal{valType: vt, mutable: mut == 1, raw: start[:len(start)-len(r.b)]}
		if g.mutable && vt != 0x7f && vt != 0x7e && vt != 0x7d && vt != 0x7c {
			return noSnapshot("it has a mutable global of type %#x", vt)
		}
		m.globals = append(m.globals, g)
	}
	return nil
}

func checkData(r *reader) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := range n {
		flags, err := r.u32()
		if err != nil {
			return err
		}
		switch flags {
		case 0:
		case 2:
			if _, err := r.u32(); err != nil {
				return err
			}
		case 1:
			return noSnapshot("data segment %d is passive", i)
		default:
			return fmt.Errorf("data segment %d has flags %d", i, flags)
		}
		if err := skipExpr(r); err != nil {
			return err
		}
		size, err := r.u32()
		if err != nil {
			return err
		}
		if _, err := r.bytes(int(size)); err != nil {
			return err
		}
	}
	return nil
}

// scanCode decodes every function body and refuses table mutation and
// instructions it does not know.
func scanCode(r *reader) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := range n {
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
			if _, err := skipInstr(&b); err != nil {
				return fmt.Errorf("function %d: %w", i, err)
			}
		}
	}
	return nil
}

// skipExpr skips a constant expression through its end opcode.
func skipExpr(r *reader) error {
	for {
		op, err := skipInstr(r)
		if err != nil {
			return err
		}
		if op == 0x0b {
			return nil
		}
	}
}

func (r *reader) skipLEB() error {
	for range 10 {
		c, err := r.byte()
		if err != nil {
			return err
		}
		if c&0x80 == 0 {
			return nil
		}
	}
	return errors.New("integer too long")
}

func (r *reader) skipU32s(n int) error {
	for range n {
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	return nil
}

// skipInstr reads one instruction and returns its opcode. Table mutation and
// instructions a snapshot does not handle (SIMD, threads, exceptions) are
// errors of type *errNoSnapshot; malformed code is an error too.
func skipInstr(r *reader) (byte, error) {
	if len(r.b) > 0 {
		if err := snapshotRefuses(r.b); err != nil {
			return r.b[0], err
		}
	}
	return nextInstr(r)
}

// snapshotRefuses says why the instruction at the start of b keeps a module
// from being snapshotted, or nil.
func snapshotRefuses(b []byte) error {
	switch op := b[0]; {
	case op == 0x26:
		return noSnapshot("its code sets table entries (table.set)")
	case op == 0xfc:
		rr := reader{b: b[1:]}
		sub, err := rr.u32()
		switch {
		case err != nil:
			return nil // nextInstr reports it
		case sub >= 12 && sub <= 15, sub == 17:
			return noSnapshot("its code changes tables (0xfc %d)", sub)
		case sub > 17:
			return noSnapshot("its code uses instruction 0xfc %d", sub)
		}
	case op >= 0x06 && op <= 0x0a, op == 0x18, op == 0x19, op == 0x1f, op == 0xfd, op == 0xfe:
		return noSnapshot("its code uses instruction %#x (SIMD, threads or exceptions)", op)
	}
	return nil
}

// snapshotGlobalExport names the export of mutable global i in the capture module.
func snapshotGlobalExport(i int) string { return fmt.Sprintf("nimbus.snapshot.global.%d", i) }

// captureCode is the module with every mutable global exported.
func (m *snapModule) captureCode() ([]byte, error) {
	var extra [][]byte
	for i, g := range m.globals {
		if g.mutable {
			e := appendName(nil, snapshotGlobalExport(i))
			e = append(e, kindGlobal)
			e = binary.AppendUvarint(e, uint64(i))
			extra = append(extra, e)
		}
	}
	secs := make([]wasmSection, 0, len(m.sections)+1)
	found := false
	for _, s := range m.sections {
		if s.id == secExport {
			r := reader{b: s.body}
			n, err := r.u32()
			if err != nil {
				return nil, err
			}
			body := binary.AppendUvarint(nil, uint64(n)+uint64(len(extra)))
			body = append(body, r.b...)
			s = wasmSection{secExport, append(body, bytes.Join(extra, nil)...)}
			found = true
		}
		secs = append(secs, s)
	}
	if !found {
		body := binary.AppendUvarint(nil, uint64(len(extra)))
		secs = insertSection(secs, wasmSection{secExport, append(body, bytes.Join(extra, nil)...)})
	}
	return joinSections(secs), nil
}

// snapshotCode emits the module whose instances start where the capture
// instance was: memory holds mem (and starts at exactly its size), mutable
// globals hold vals (by global index), and no start function runs.
func (m *snapModule) snapshotCode(mem []byte, vals map[int]uint64) []byte {
	pages := uint32(len(mem) / pageSize)
	segs := dataSegments(mem)
	var secs []wasmSection
	for _, s := range m.sections {
		switch s.id {
		case secStart:
			continue
		case secMemory:
			body := []byte{1, m.memFlags}
			body = binary.AppendUvarint(body, uint64(pages))
			if m.memFlags&0x01 != 0 {
				body = binary.AppendUvarint(body, uint64(max(m.memMax, pages)))
			}
			s = wasmSection{secMemory, body}
		case secGlobal:
			body := binary.AppendUvarint(nil, uint64(len(m.globals)))
			for i, g := range m.globals {
				if !g.mutable {
					body = append(body, g.raw...)
					continue
				}
				body = append(body, g.valType, 1)
				body = appendConst(body, g.valType, vals[i])
			}
			s = wasmSection{secGlobal, body}
		case secData:
			continue
		case secDataCount:
			s = wasmSection{secDataCount, binary.AppendUvarint(nil, uint64(len(segs)))}
		}
		secs = append(secs, s)
	}
	body := binary.AppendUvarint(nil, uint64(len(segs)))
	for _, sg := range segs {
		body = append(body, 0, 0x41)
		body = appendSLEB(body, int64(int32(uint32(sg.off))))
		body = append(body, 0x0b)
		body = binary.AppendUvarint(body, uint64(len(sg.b)))
		body = append(body, sg.b...)
	}
	return joinSections(insertSection(secs, wasmSection{secData, body}))
}

type dataSeg struct {
	off int
	b   []byte
}

// dataSegments covers the non-zero 4 KiB blocks of mem with as few segments
// as the zero blocks between them allow.
func dataSegments(mem []byte) []dataSeg {
	const block = 4096
	var segs []dataSeg
	start := -1
	for off := 0; off < len(mem); off += block {
		end := min(off+block, len(mem))
		zero := allZero(mem[off:end])
		switch {
		case !zero && start < 0:
			start = off
		case zero && start >= 0:
			segs = append(segs, dataSeg{start, mem[start:off]})
			start = -1
		}
	}
	if start >= 0 {
		segs = append(segs, dataSeg{start, mem[start:]})
	}
	return segs
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func appendConst(b []byte, vt byte, v uint64) []byte {
	switch vt {
	case 0x7f:
		b = append(b, 0x41)
		b = appendSLEB(b, int64(int32(uint32(v))))
	case 0x7e:
		b = append(b, 0x42)
		b = appendSLEB(b, int64(v))
	case 0x7d:
		b = append(b, 0x43)
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	case 0x7c:
		b = append(b, 0x44)
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return append(b, 0x0b)
}

func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// insertSection places s among secs in the order the format requires.
func insertSection(secs []wasmSection, s wasmSection) []wasmSection {
	want := sectionOrder[s.id]
	at := len(secs)
	for i, x := range secs {
		if x.id != secCustom && sectionOrder[x.id] > want {
			at = i
			break
		}
	}
	out := make([]wasmSection, 0, len(secs)+1)
	out = append(out, secs[:at]...)
	out = append(out, s)
	return append(out, secs[at:]...)
}

// splitSections cuts a module (after its 8-byte header) into its sections.
func splitSections(code []byte) ([]wasmSection, error) {
	var secs []wasmSection
	r := reader{b: code[8:]}
	for len(r.b) > 0 {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return nil, err
		}
		secs = append(secs, wasmSection{id, body})
	}
	return secs, nil
}

func joinSections(secs []wasmSection) []byte {
	n := 8
	for _, s := range secs {
		n += 1 + binary.MaxVarintLen32 + len(s.body)
	}
	b := make([]byte, 0, n)
	b = append(b, "\x00asm\x01\x00\x00\x00"...)
	for _, s := range secs {
		if len(s.body) > math.MaxUint32 {
			panic("wasm: section too large")
		}
		b = append(b, s.id)
		b = binary.AppendUvarint(b, uint64(len(s.body)))
		b = append(b, s.body...)
	}
	return b
}

// memImage is the initial linear memory of a snapshot module, kept apart
// from its code (see splitSnapshot). id tells pooled buffers that already
// hold it from others.
type memImage struct {
	id   uint64
	data []byte // exactly the module's initial memory size
}

var imageIDs atomic.Uint64

// splitSnapshot turns a snapshot module (snapshotCode's output) into the
// same module without data segments, and the memory image those segments
// build. An instance of the split module whose memory already holds the
// image starts in the same state as one of the original module, without
// evaluating any segment. Where it can, it also replaces the function
// table with code (withoutTable), so that no element is evaluated either.
func splitSnapshot(code []byte) ([]byte, *memImage, error) {
	m, err := analyseForSnapshot(code)
	if err != nil {
		return nil, nil, err
	}
	mr := reader{b: m.section(secMemory)}
	if n, err := mr.u32(); err != nil || n != 1 {
		return nil, nil, errors.New("snapshot module must define one memory")
	}
	if _, err := mr.byte(); err != nil {
		return nil, nil, err
	}
	pages, err := mr.u32()
	if err != nil {
		return nil, nil, err
	}
	img := &memImage{id: imageIDs.Add(1), data: make([]byte, int(pages)*pageSize)}
	var secs []wasmSection
	for _, s := range m.sections {
		switch s.id {
		case secDataCount:
			continue
		case secData:
			if err := applySegments(s.body, img.data); err != nil {
				return nil, nil, err
			}
			continue
		}
		secs = append(secs, s)
	}
	if secs, _, err = withoutTable(secs); err != nil {
		return nil, nil, err
	}
	return joinSections(secs), img, nil
}

// applySegments writes the active data segments of a data section body
// (each at an i32.const offset of memory 0) into mem.
func applySegments(body, mem []byte) error {
	r := reader{b: body}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := range n {
		flags, err := r.u32()
		if err != nil {
			return err
		}
		if flags != 0 {
			return fmt.Errorf("data segment %d has flags %d", i, flags)
		}
		if op, err := r.byte(); err != nil || op != 0x41 {
			return fmt.Errorf("data segment %d: offset is not an i32.const", i)
		}
		off, err := r.s32()
		if err != nil {
			return err
		}
		if end, err := r.byte(); err != nil || end != 0x0b {
			return fmt.Errorf("data segment %d: offset is not a constant", i)
		}
		size, err := r.u32()
		if err != nil {
			return err
		}
		b, err := r.bytes(int(size))
		if err != nil {
			return err
		}
		start := int64(uint32(off))
		if start+int64(len(b)) > int64(len(mem)) {
			return fmt.Errorf("data segment %d is out of bounds", i)
		}
		copy(mem[start:], b)
	}
	return nil
}

// s32 reads a signed LEB128 32-bit integer.
func (r *reader) s32() (int32, error) {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if shift+7 < 64 && c&0x40 != 0 {
				v |= -1 << (shift + 7)
			}
			return int32(v), nil
		}
	}
	return 0, errors.New("integer too long")
}
