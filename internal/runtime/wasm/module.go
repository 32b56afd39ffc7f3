package wasm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// moduleInfo is what Nimbus reads from a module's binary before compiling it:
// enough to detect its contract and refuse it early with a clear reason.
type moduleInfo struct {
	imports []moduleImport
	exports map[string]byte // name → external kind
	// memMin is the minimum page count of the module's own memory; -1 if it
	// defines none.
	memMin int64
	// hasStart: the module has a start function, run at instantiation.
	hasStart bool
}

type moduleImport struct {
	module, name string
	kind         byte
	typ          uint32 // a function's type index
}

// External kinds of imports and exports.
const (
	kindFunc   byte = 0
	kindTable  byte = 1
	kindMemory byte = 2
	kindGlobal byte = 3
	kindTag    byte = 4
)

func kindName(k byte) string {
	switch k {
	case kindFunc:
		return "function"
	case kindTable:
		return "table"
	case kindMemory:
		return "memory"
	case kindGlobal:
		return "global"
	case kindTag:
		return "tag"
	}
	return fmt.Sprintf("kind %d", k)
}

var errTruncated = errors.New("unexpected end of module")

// parseModule reads the import, memory and export sections of a module. Any
// malformation is a BadCode error.
func parseModule(code []byte) (*moduleInfo, error) {
	if len(code) < 8 || string(code[:4]) != "\x00asm" {
		return nil, runtime.Errorf(runtime.BadCode, "not a WebAssembly module (bad magic)")
	}
	if string(code[4:8]) != "\x01\x00\x00\x00" {
		return nil, runtime.Errorf(runtime.BadCode, "unsupported WebAssembly binary version %d (want 1; components are not supported)", le32(code[4:8]))
	}
	info := &moduleInfo{exports: map[string]byte{}, memMin: -1}
	r := reader{b: code[8:]}
	for len(r.b) > 0 {
		id, err := r.byte()
		if err != nil {
			return nil, badModule(err)
		}
		size, err := r.u32()
		if err != nil {
			return nil, badModule(err)
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return nil, badModule(fmt.Errorf("section %d: %w", id, err))
		}
		s := reader{b: body}
		switch id {
		case 2:
			err = parseImports(&s, info)
		case 5:
			err = parseMemories(&s, info)
		case 7:
			err = parseExports(&s, info)
		case 8:
			info.hasStart = true
		}
		if err != nil {
			return nil, badModule(err)
		}
	}
	return info, nil
}

func badModule(err error) error {
	return &runtime.Error{Kind: runtime.BadCode, Message: "malformed WebAssembly module", Err: err}
}

func parseImports(r *reader, info *moduleInfo) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for range n {
		mod, err := r.name()
		if err != nil {
			return err
		}
		name, err := r.name()
		if err != nil {
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		var typ uint32
		switch kind {
		case kindFunc:
			typ, err = r.u32()
		case kindTable:
			if _, err = r.byte(); err == nil {
				err = r.skipLimits()
			}
		case kindMemory:
			err = r.skipLimits()
		case kindGlobal:
			if _, err = r.byte(); err == nil {
				_, err = r.byte()
			}
		case kindTag:
			if _, err = r.byte(); err == nil {
				_, err = r.u32()
			}
		default:
			return fmt.Errorf("import %q.%q has unknown kind %d", mod, name, kind)
		}
		if err != nil {
			return err
		}
		info.imports = append(info.imports, moduleImport{module: mod, name: name, kind: kind, typ: typ})
	}
	return nil
}

func parseMemories(r *reader, info *moduleInfo) error {
	n, err := r.u32()
	if err != nil || n == 0 {
		return err
	}
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags&0x04 != 0 {
		return errors.New("64-bit memories are not supported")
	}
	min, err := r.u32()
	if err != nil {
		return err
	}
	info.memMin = int64(min)
	return nil
}

func parseExports(r *reader, info *moduleInfo) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for range n {
		name, err := r.name()
		if err != nil {
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		if _, err := r.u32(); err != nil {
			return err
		}
		info.exports[name] = kind
	}
	return nil
}

// abiVersions lists the Nimbus ABI versions a module declares through
// nimbus_abi_version_N exports.
func (m *moduleInfo) abiVersions() []string {
	var vs []string
	for name := range m.exports {
		if v, ok := strings.CutPrefix(name, "nimbus_abi_version_"); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

func (m *moduleInfo) exportsFunc(name string) bool {
	k, ok := m.exports[name]
	return ok && k == kindFunc
}

// reader decodes the WebAssembly binary format.
type reader struct{ b []byte }

func (r *reader) byte() (byte, error) {
	if len(r.b) == 0 {
		return 0, errTruncated
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) u32() (uint32, error) {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			if shift == 28 && c > 0x0f {
				return 0, errors.New("integer too large")
			}
			return v, nil
		}
	}
	return 0, errors.New("integer too long")
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || n > len(r.b) {
		return nil, errTruncated
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b, nil
}

func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	b, err := r.bytes(int(n))
	return string(b), err
}

func (r *reader) skipLimits() error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if _, err := r.u32(); err != nil {
		return err
	}
	if flags&0x01 != 0 {
		_, err = r.u32()
	}
	return err
}

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
