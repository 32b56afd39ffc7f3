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
	img     *memImage // the snapshot image the memory started from, if any
	orig    bool      // buf is still the buffer Allocate gave
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
		m.pool.put(m.buf, m.img)
	}
	m.buf = nil
}

// memoryCap is an experimental.MemoryAllocator for one instance.
type memoryCap struct {
	limit uint64
	live  *atomic.Int64
	pool  *bufPool      // reused buffers; nil allocates afresh
	img   *memImage     // initial memory contents (a snapshot's), or nil: zeros
	mem   *linearMemory // the memory allocated for the instance
}

func (a *memoryCap) Allocate(capacity, _ uint64) experimental.LinearMemory {
	capacity = min(capacity, a.limit)
	m := &linearMemory{limit: a.limit, live: a.live, pool: a.pool, orig: true}
	ready := false
	if a.pool != nil {
		m.buf, ready = a.pool.get(capacity, a.img)
	}
	if m.buf == nil {
		m.buf = make([]byte, 0, capacity)
	}
	if a.img != nil && uint64(len(a.img.data)) <= capacity {
		// wazero asks for the initial size next (Reallocate), which is the
		// image's: the image is in place before the module sees its memory.
		m.img = a.img
		if !ready {
			copy(m.buf[:len(a.img.data)], a.img.data)
		}
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

// bufPool keeps the buffers of closed instances for new ones, by capacity,
// up to max bytes. A fresh buffer costs a page fault per 4 KiB page on first
// touch; a pooled one is already resident. A buffer is kept zeroed, or
// holding a snapshot image (and zeroed past it) so that the next instance
// of that snapshot finds its memory ready: the copy is made when an instance
// closes rather than when one starts.
type bufPool struct {
	mu   sync.Mutex
	max  int64
	size int64
	free map[uint64][]pooledBuf
}

type pooledBuf struct {
	b   []byte
	img uint64 // id of the image b holds in b[:imgLen]; 0: all zero
	n   int    // imgLen
}

func newBufPool(max int64) *bufPool {
	if max <= 0 {
		return nil
	}
	return &bufPool{max: max, free: map[uint64][]pooledBuf{}}
}

// get returns a buffer of length 0 and exactly capacity, or nil. When img is
// set, the buffer holds img's data and zeros past it, and ready reports
// whether it already did (else the caller must copy the image in: the
// buffer is zeroed past len(img.data)). Without img, the buffer is zeroed.
func (p *bufPool) get(capacity uint64, img *memImage) (b []byte, ready bool) {
	p.mu.Lock()
	l := p.free[capacity]
	if len(l) == 0 {
		p.mu.Unlock()
		return nil, false
	}
	// Prefer a buffer holding img (or, without img, a zeroed one).
	want := uint64(0)
	if img != nil {
		want = img.id
	}
	i := len(l) - 1
	for j := len(l) - 1; j >= 0; j-- {
		if l[j].img == want {
			i = j
			break
		}
	}
	pb := l[i]
	l[i] = l[len(l)-1]
	l[len(l)-1] = pooledBuf{}
	p.free[capacity] = l[:len(l)-1]
	p.size -= int64(cap(pb.b))
	p.mu.Unlock()
	b = pb.b[:cap(pb.b)]
	switch {
	case img != nil && pb.img == img.id:
		return b[:0], true
	case pb.img != 0:
		// Another image: zero what it covered (past img, which the caller
		// copies over).
		from := 0
		if img != nil {
			from = min(len(img.data), pb.n)
		}
		clear(b[from:pb.n])
	}
	return b[:0], false
}

// put restores b (as far as it was used) to img's data and zeros past it,
// or to zeros without img, and keeps it if there is room.
func (p *bufPool) put(b []byte, img *memImage) {
	c := int64(cap(b))
	p.mu.Lock()
	room := p.size+c <= p.max
	if room {
		p.size += c // reserved while restoring
	}
	p.mu.Unlock()
	if !room {
		return
	}
	pb := pooledBuf{b: b[:0]}
	if img != nil && len(img.data) <= len(b) {
		copy(b, img.data)
		clear(b[len(img.data):])
		pb.img, pb.n = img.id, len(img.data)
	} else {
		clear(b)
	}
	p.mu.Lock()
	p.free[uint64(cap(b))] = append(p.free[uint64(cap(b))], pb)
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
