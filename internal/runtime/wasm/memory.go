package wasm

import (
	"sync"
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
	// pool, if set, takes the buffer back on Free when recycle is set: only
	// when no call can still be running on the memory.
	pool    *bufPool
	orig    bool // buf is still the buffer Allocate gave
	recycle atomic.Bool
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
	m.orig = false
	return nb
}

func (m *linearMemory) Free() {
	m.live.Add(-int64(cap(m.buf)))
	if m.pool != nil && m.orig && m.recycle.Load() {
		m.pool.put(m.buf)
	}
	m.buf = nil
}

// memoryCap is an experimental.MemoryAllocator for one instance.
type memoryCap struct {
	limit uint64
	live  *atomic.Int64
	pool  *bufPool      // reused buffers; nil allocates afresh
	mem   *linearMemory // the memory allocated for the instance
}

func (a *memoryCap) Allocate(capacity, _ uint64) experimental.LinearMemory {
	capacity = min(capacity, a.limit)
	m := &linearMemory{limit: a.limit, live: a.live, pool: a.pool, orig: true}
	if a.pool != nil {
		m.buf = a.pool.get(capacity)
	}
	if m.buf == nil {
		m.buf = make([]byte, 0, capacity)
	}
	m.live.Add(int64(capacity))
	a.mem = m
	return m
}

// allowRecycle lets the instance's memory go back to the pool when freed:
// the caller knows that no call runs on it any more.
func (a *memoryCap) allowRecycle() {
	if a.mem != nil {
		a.mem.recycle.Store(true)
	}
}

// bufPool keeps the zeroed buffers of closed instances for new ones, by
// capacity, up to max bytes. A fresh buffer costs a page fault per 4 KiB
// page on first touch; a pooled one is already resident.
type bufPool struct {
	mu   sync.Mutex
	max  int64
	size int64
	free map[uint64][][]byte
}

func newBufPool(max int64) *bufPool {
	if max <= 0 {
		return nil
	}
	return &bufPool{max: max, free: map[uint64][][]byte{}}
}

// get returns a zeroed buffer of length 0 and exactly capacity, or nil.
func (p *bufPool) get(capacity uint64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[capacity]
	if len(l) == 0 {
		return nil
	}
	b := l[len(l)-1]
	l[len(l)-1] = nil
	p.free[capacity] = l[:len(l)-1]
	p.size -= int64(cap(b))
	return b[:0]
}

// put zeroes b (as far as it was used) and keeps it if there is room.
func (p *bufPool) put(b []byte) {
	c := int64(cap(b))
	p.mu.Lock()
	room := p.size+c <= p.max
	if room {
		p.size += c // reserved while clearing
	}
	p.mu.Unlock()
	if !room {
		return
	}
	clear(b)
	p.mu.Lock()
	p.free[uint64(cap(b))] = append(p.free[uint64(cap(b))], b[:0])
	p.mu.Unlock()
}

// bytes reports the bytes held by the pool.
func (p *bufPool) bytes() int64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}

func (a *memoryCap) outOfMemory() bool { return a.mem != nil && a.mem.refused.Load() }
