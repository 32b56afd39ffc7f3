// Package spare keeps instances made ahead of the cold starts that will
// need them. A runtime's template (one function version) has a Slot holding
// at most one spare: an instance set up as far as it can be without running
// any code of the function, so it uses no CPU and bills nothing. A cold
// start takes it instead of making an instance, and the slot makes the next
// one shortly after (RefillLater). A runtime's Set bounds its spares: at
// most Max at once, a new one replacing the one made longest ago (a
// function just used is likelier to start again than one idle longer), and
// each is dropped after Linger unused.
//
// The lambda and process runtimes' spares are processes held before their
// first instruction; the wasm runtime's are modules instantiated but not
// yet called.
package spare

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Delay separates making a spare from the start that used the last one, so
// that the two do not compete: made at once, even a wasm spare's tens of µs
// delayed the response of the start that took the last one (tiny module's
// HTTP cold start p50 0.18 ms with the delay, 0.28-0.39 ms without).
const Delay = 100 * time.Millisecond

// ErrUnsupported, returned by a slot's build function, says that no spare
// can be made on this machine: the Set turns off.
var ErrUnsupported = errors.New("spare instances are not possible here")

// Defaults of a Set's bounds.
const (
	DefaultMax    = 8
	DefaultLinger = 10 * time.Minute
)

// Set bounds the spares of one runtime. Its zero value is ready to use.
type Set struct {
	// Max and Linger are read when a spare is made; zero means
	// DefaultMax and DefaultLinger.
	Max    int
	Linger time.Duration

	count atomic.Int32
	off   atomic.Bool
	mu    sync.Mutex
	held  []holder // slots holding a spare, oldest first
}

// holder is a Slot of any instance type.
type holder interface{ drop() }

func (s *Set) max() int {
	if s.Max > 0 {
		return s.Max
	}
	return DefaultMax
}

func (s *Set) linger() time.Duration {
	if s.Linger > 0 {
		return s.Linger
	}
	return DefaultLinger
}

// Count reports how many spares exist or are being made.
func (s *Set) Count() int { return int(s.count.Load()) }

// SetOff turns spares off (or back on); Slots then make none.
func (s *Set) SetOff(off bool) { s.off.Store(off) }

// Off reports whether spares are off.
func (s *Set) Off() bool { return s.off.Load() }

func (s *Set) remove(h holder) {
	s.mu.Lock()
	for i, x := range s.held {
		if x == h {
			s.held = append(s.held[:i], s.held[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
}

// evictOldest drops the spare made longest ago, unless it is except's.
func (s *Set) evictOldest(except holder) {
	s.mu.Lock()
	var victim holder
	if len(s.held) > 0 && s.held[0] != except {
		victim = s.held[0]
	}
	s.mu.Unlock()
	if victim != nil {
		victim.drop()
	}
}

// Slot is one template's spare and what is being done about it.
type Slot[T any] struct {
	set   *Set
	build func() (T, error)
	close func(T)

	mu      sync.Mutex
	in      T
	has     bool
	making  chan struct{} // closed when the spare being made is ready or failed
	pending bool          // a refill is scheduled
	linger  *time.Timer
	closed  bool
}

// NewSlot returns an empty slot of set whose spares build makes (bounding
// its own time) and close discards.
func NewSlot[T any](set *Set, build func() (T, error), close func(T)) *Slot[T] {
	return &Slot[T]{set: set, build: build, close: close}
}

// Take returns the slot's spare, waiting for one being made (it started
// earlier than any start made now would); ok is false when there is none.
func (sl *Slot[T]) Take(ctx context.Context) (in T, ok bool) {
	sl.mu.Lock()
	for !sl.has && sl.making != nil {
		ch := sl.making
		sl.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return in, false
		}
		sl.mu.Lock()
	}
	in, ok = sl.takeLocked()
	sl.mu.Unlock()
	return in, ok
}

// Peek returns the slot's spare without taking it.
func (sl *Slot[T]) Peek() (T, bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.in, sl.has
}

// takeLocked removes the spare; sl.mu held.
func (sl *Slot[T]) takeLocked() (in T, ok bool) {
	if !sl.has {
		return in, false
	}
	in, ok = sl.in, true
	var zero T
	sl.in, sl.has = zero, false
	if sl.linger != nil {
		sl.linger.Stop()
		sl.linger = nil
	}
	sl.set.count.Add(-1)
	sl.set.remove(sl)
	return in, ok
}

// drop discards the spare, if any.
func (sl *Slot[T]) drop() {
	sl.mu.Lock()
	in, ok := sl.takeLocked()
	sl.mu.Unlock()
	if ok {
		go sl.close(in)
	}
}

// RefillLater makes a spare after Delay unless one exists or is on its way.
func (sl *Slot[T]) RefillLater() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.pending || sl.closed || sl.has || sl.making != nil || sl.set.Off() {
		return
	}
	sl.pending = true
	refill := func() {
		sl.mu.Lock()
		sl.pending = false
		sl.mu.Unlock()
		if build := sl.Reserve(); build != nil {
			build()
		}
	}
	time.AfterFunc(Delay, refill)
}

// Reserve claims the making of the slot's spare and returns the function
// that makes it (to run now or in a goroutine), or nil when the slot has a
// spare, one is being made, or spares are off. A Take meanwhile waits for
// it. With Max spares already, the oldest is dropped first.
func (sl *Slot[T]) Reserve() func() {
	set := sl.set
	if set.Count() >= set.max() && !set.Off() {
		set.evictOldest(sl)
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.closed || sl.has || sl.making != nil || set.Off() {
		return nil
	}
	if set.count.Add(1) > int32(set.max()) {
		set.count.Add(-1)
		return nil
	}
	done := make(chan struct{})
	sl.making = done
	return func() { sl.make(done) }
}

// Fill makes the slot's spare now and returns once it is ready or failed,
// unless the slot has one, one is being made, or spares are off. A
// template's first spare is made this way when it is prepared, so that a
// function deployed is ready to start: the first call right after a deploy
// takes the spare instead of waiting for the rest of one being made.
func (sl *Slot[T]) Fill() {
	if build := sl.Reserve(); build != nil {
		build()
	}
}

// make builds the spare Reserve claimed; done is closed when it is ready or
// failed.
func (sl *Slot[T]) make(done chan struct{}) {
	in, err := sl.build()
	if errors.Is(err, ErrUnsupported) {
		sl.set.SetOff(true)
	}
	sl.mu.Lock()
	sl.making = nil
	close(done)
	if err != nil || sl.closed {
		sl.mu.Unlock()
		sl.set.count.Add(-1)
		if err == nil {
			sl.close(in)
		}
		return
	}
	sl.in, sl.has = in, true
	sl.set.mu.Lock()
	sl.set.held = append(sl.set.held, sl)
	sl.set.mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(sl.set.linger(), func() {
		sl.mu.Lock()
		var old T
		ok := false
		if sl.linger == t {
			old, ok = sl.takeLocked()
		}
		sl.mu.Unlock()
		if ok {
			sl.close(old)
		}
	})
	sl.linger = t
	sl.mu.Unlock()
}

// Close discards the spare and makes no more.
func (sl *Slot[T]) Close() {
	sl.mu.Lock()
	sl.closed = true
	in, ok := sl.takeLocked()
	sl.mu.Unlock()
	if ok {
		sl.close(in)
	}
}
