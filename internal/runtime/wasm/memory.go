package wasm

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

const pageSize = 65536

// linearMemory backs one instance's linear memory and enforces its cap: a
// growth past limit fails (memory.grow returns -1 to the guest) and is
// remembered, so that the crash that usually follows is reported as
// OutOfMemory rather than a plain trap.
type linearMemory struct {
	buf     []byte
	limit   uint64
	refused atomic.Bool
	live    *atomic.Int64 // the runtime's total of linear memory bytes
}

var _ experimental.LinearMemory = (*linearMemory)(nil)

func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused.Store(true)
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		// Bytes past the old length were zeroed when allocated and memory
		// never shrinks, so growth in place needs no clearing.
		m.buf = m.buf[:size]
		return m.buf
	}
	newCap := size + size/4
	newCap = (newCap + pageSize - 1) &^ (pageSize - 1)
	newCap = min(newCap, m.limit)
	nb := make([]byte, size, newCap)
	copy(nb, m.buf)
	m.live.Add(int64(cap(nb) - cap(m.buf)))
	m.buf = nb
	return nb
}

func (m *linearMemory) Free() {
	m.live.Add(-int64(cap(m.buf)))
	m.buf = nil
}

// memoryCap is an experimental.MemoryAllocator for one instance.
type memoryCap struct {
	limit uint64
	live  *atomic.Int64
	mem   *linearMemory // the memory allocated for the instance
}

func (a *memoryCap) Allocate(capacity, _ uint64) experimental.LinearMemory {
	capacity = min(capacity, a.limit)
	m := &linearMemory{limit: a.limit, live: a.live, buf: make([]byte, 0, capacity)}
	m.live.Add(int64(capacity))
	a.mem = m
	return m
}

func (a *memoryCap) outOfMemory() bool { return a.mem != nil && a.mem.refused.Load() }
