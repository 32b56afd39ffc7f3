package wasm

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
)

// Defaults of the compiled-module LRU bounds.
const (
	DefaultMaxModules     = 64
	DefaultMaxModuleBytes = 256 << 20
)

// modSource is where a template's module comes from: its digest names it in
// the cache, and load reads its bytes again after an eviction.
type modSource struct {
	key  string // hex sha256 of the bytes
	size int
	load func() ([]byte, error)
	// split marks a snapshot module that is compiled without its data
	// segments, its instances' memory starting from its image instead
	// (splitSnapshot).
	split bool
}

// newSource returns a source for code: a file under dir (written if needed)
// when dir is set, else the bytes themselves.
func newSource(dir string, code []byte) (*modSource, error) {
	sum := sha256.Sum256(code)
	src := &modSource{key: hex.EncodeToString(sum[:]), size: len(code)}
	if dir == "" {
		src.load = func() ([]byte, error) { return code, nil }
		return src, nil
	}
	path := filepath.Join(dir, src.key+".wasm")
	if _, err := os.Stat(path); err != nil {
		if err := writeFileAtomic(path, code); err != nil {
			return nil, err
		}
	}
	src.load = func() ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("wasm: reloading module %s: %w", src.key[:12], err)
		}
		return b, nil
	}
	return src, nil
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("wasm: cache dir: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("wasm: writing %s: %w", path, err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("wasm: writing %s: %w", path, err)
	}
	return nil
}

// modCache keeps compiled modules in memory under a bound by count and by
// module bytes, least recently used first out. An evicted module is closed
// (live instances keep running) and compiled again, from wazero's disk
// cache, when next needed. Entries in use (pinned) are never evicted.
type modCache struct {
	rt        wazero.Runtime
	maxCount  int
	maxBytes  int64
	mu        sync.Mutex
	entries   map[string]*modEntry
	lru       list.List // of *modEntry, most recent first; ready entries only
	bytes     int64
	holders   map[string]int // templates using each key
	compiles  int64          // compilations done, for tests and stats
	evictions int64
}

type modEntry struct {
	key      string
	size     int
	compiled wazero.CompiledModule
	img      *memImage // for a split snapshot: its instances' initial memory
	err      error
	ready    chan struct{}
	pins     int
	elem     *list.Element
}

func newModCache(rt wazero.Runtime, maxCount int, maxBytes int64) *modCache {
	return &modCache{rt: rt, maxCount: maxCount, maxBytes: maxBytes, entries: map[string]*modEntry{}, holders: map[string]int{}}
}

// acquire returns the compiled module of src, compiling it if needed, pinned
// until release.
func (c *modCache) acquire(ctx context.Context, src *modSource) (*modEntry, error) {
	c.mu.Lock()
	e := c.entries[src.key]
	if e != nil {
		e.pins++
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			c.release(e)
			return nil, ctx.Err()
		}
		if e.err != nil {
			c.release(e)
			return nil, e.err
		}
		return e, nil
	}
	e = &modEntry{key: src.key, size: src.size, ready: make(chan struct{}), pins: 1}
	c.entries[src.key] = e
	c.compiles++
	c.mu.Unlock()

	compiled, img, err := c.compile(ctx, src)
	c.mu.Lock()
	e.compiled, e.img, e.err = compiled, img, err
	close(e.ready)
	if err != nil {
		delete(c.entries, src.key)
		c.mu.Unlock()
		return nil, err
	}
	e.elem = c.lru.PushFront(e)
	c.bytes += int64(e.size)
	c.evictLocked()
	c.mu.Unlock()
	return e, nil
}

func (c *modCache) compile(ctx context.Context, src *modSource) (wazero.CompiledModule, *memImage, error) {
	code, err := src.load()
	if err != nil {
		return nil, nil, err
	}
	var img *memImage
	if src.split {
		if code, img, err = splitSnapshot(code); err != nil {
			return nil, nil, fmt.Errorf("wasm: snapshot %s: %w", src.key[:12], err)
		}
	}
	compiled, err := c.rt.CompileModule(experimental.WithCompilationWorkers(ctx, goruntime.GOMAXPROCS(0)), code)
	return compiled, img, err
}

// release unpins e.
func (c *modCache) release(e *modEntry) {
	c.mu.Lock()
	e.pins--
	if e.elem == nil && e.pins == 0 && e.compiled != nil && c.entries[e.key] != e {
		// Removed while pinned: close now.
		_ = e.compiled.Close(context.Background())
		e.compiled, e.img = nil, nil
	}
	c.evictLocked()
	c.mu.Unlock()
}

// hold records that a template uses key; unhold drops the record and the
// module itself once no template uses it.
func (c *modCache) hold(key string) {
	c.mu.Lock()
	c.holders[key]++
	c.mu.Unlock()
}

func (c *modCache) unhold(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holders[key]--; c.holders[key] > 0 {
		return
	}
	delete(c.holders, key)
	if e := c.entries[key]; e != nil && e.elem != nil {
		c.removeLocked(e)
	}
}

// dropUnheld removes key's module if no template uses it.
func (c *modCache) dropUnheld(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil && e.elem != nil && c.holders[key] == 0 {
		c.removeLocked(e)
	}
}

func (c *modCache) removeLocked(e *modEntry) {
	c.lru.Remove(e.elem)
	e.elem = nil
	delete(c.entries, e.key)
	c.bytes -= int64(e.size)
	if e.pins == 0 {
		_ = e.compiled.Close(context.Background())
		e.compiled, e.img = nil, nil
	}
}

func (c *modCache) evictLocked() {
	for el := c.lru.Back(); el != nil && (c.lru.Len() > c.maxCount || c.bytes > c.maxBytes); {
		e := el.Value.(*modEntry)
		el = el.Prev()
		if e.pins > 0 {
			continue
		}
		c.removeLocked(e)
		c.evictions++
	}
}

// ModuleCacheStats describes the compiled-module cache.
type ModuleCacheStats struct {
	Modules   int   // compiled modules in memory
	Bytes     int64 // their size as WebAssembly binaries
	Compiles  int64 // compilations since start (including reloads)
	Evictions int64 // modules evicted by the bounds
}

func (c *modCache) stats() ModuleCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ModuleCacheStats{Modules: c.lru.Len(), Bytes: c.bytes, Compiles: c.compiles, Evictions: c.evictions}
}
