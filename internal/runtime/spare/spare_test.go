package spare

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// thing is a spare that knows whether it was discarded.
type thing struct {
	id     int
	closed chan struct{}
}

// maker builds numbered things, optionally slowly or failing.
type maker struct {
	mu    sync.Mutex
	n     int
	delay time.Duration
	err   error
}

func (m *maker) build() (*thing, error) {
	time.Sleep(m.delay)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	m.n++
	return &thing{id: m.n, closed: make(chan struct{})}, nil
}

func discard(t *thing) { close(t.closed) }

func waitClosed(tb testing.TB, th *thing) {
	tb.Helper()
	select {
	case <-th.closed:
	case <-time.After(10 * time.Second):
		tb.Fatalf("spare %d was not discarded", th.id)
	}
}

func waitHeld[T any](tb testing.TB, sl *Slot[T]) T {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if in, ok := sl.Peek(); ok {
			return in
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatal("no spare was made")
	panic("unreachable")
}

func TestTakeWaitsForTheSpareBeingMade(t *testing.T) {
	set := &Set{Max: 8, Linger: time.Hour}
	m := &maker{delay: 50 * time.Millisecond}
	sl := NewSlot(set, m.build, discard)
	build := sl.Reserve()
	if build == nil {
		t.Fatal("Reserve on an empty slot returned nil")
	}
	if sl.Reserve() != nil {
		t.Fatal("a second Reserve while one is made returned a builder")
	}
	go build()
	in, ok := sl.Take(context.Background())
	if !ok || in.id != 1 {
		t.Fatalf("Take = %v, %v; want the spare being made", in, ok)
	}
	if _, ok := sl.Take(context.Background()); ok {
		t.Fatal("the slot gave its spare twice")
	}
	if set.Count() != 0 {
		t.Fatalf("Count = %d after the spare was taken", set.Count())
	}
	sl.RefillLater()
	if in := waitHeld(t, sl); in.id != 2 {
		t.Fatalf("refill made spare %d, want 2", in.id)
	}
	sl.Close()
	if set.Count() != 0 {
		t.Fatalf("Count = %d after Close", set.Count())
	}
	sl.RefillLater()
	if sl.Reserve() != nil {
		t.Fatal("a closed slot reserved a spare")
	}
}

func TestTakeGivesUpWithItsContext(t *testing.T) {
	set := &Set{Max: 8, Linger: time.Hour}
	m := &maker{delay: time.Second}
	sl := NewSlot(set, m.build, discard)
	build := sl.Reserve() // reserved now; made in the background
	go build()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, ok := sl.Take(ctx); ok {
		t.Fatal("Take returned a spare before it was made")
	}
	sl.Close()
}

func TestMaxReplacesTheOldest(t *testing.T) {
	set := &Set{Max: 2, Linger: time.Hour}
	m := &maker{}
	var slots []*Slot[*thing]
	var made []*thing
	for i := 0; i < 3; i++ {
		sl := NewSlot(set, m.build, discard)
		sl.Reserve()()
		slots = append(slots, sl)
		made = append(made, waitHeld(t, sl))
	}
	waitClosed(t, made[0])
	if _, ok := slots[0].Peek(); ok || set.Count() != 2 {
		t.Fatalf("the oldest spare was kept (count %d)", set.Count())
	}
	// A slot whose spare is the oldest does not evict itself.
	slots[1].Close()
	slots[2].Close()
	if set.Count() != 0 {
		t.Fatalf("Count = %d after Close", set.Count())
	}
}

func TestLingerDiscards(t *testing.T) {
	set := &Set{Max: 8, Linger: 50 * time.Millisecond}
	sl := NewSlot(set, (&maker{}).build, discard)
	sl.Reserve()()
	waitClosed(t, waitHeld(t, sl))
	if _, ok := sl.Peek(); ok || set.Count() != 0 {
		t.Fatalf("a lingering spare was kept (count %d)", set.Count())
	}
}

func TestFailedAndUnsupportedBuilds(t *testing.T) {
	set := &Set{Max: 8, Linger: time.Hour}
	m := &maker{err: errors.New("boom")}
	sl := NewSlot(set, m.build, discard)
	sl.Reserve()()
	if _, ok := sl.Peek(); ok || set.Count() != 0 || set.Off() {
		t.Fatalf("a failed build left a spare, a count (%d) or spares off", set.Count())
	}
	m.err = ErrUnsupported
	sl.Reserve()()
	if !set.Off() {
		t.Fatal("ErrUnsupported did not turn spares off")
	}
	if sl.Reserve() != nil || set.Count() != 0 {
		t.Fatal("a slot reserved a spare with spares off")
	}
}

func TestFillMakesTheSpareBeforeReturning(t *testing.T) {
	set := &Set{Max: 8, Linger: time.Hour}
	m := &maker{delay: 20 * time.Millisecond}
	sl := NewSlot(set, m.build, discard)
	sl.Fill()
	th, ok := sl.Peek()
	if !ok {
		t.Fatal("Fill returned before the spare was made")
	}
	sl.Fill() // has one: makes no other
	if m.n != 1 || set.Count() != 1 {
		t.Fatalf("after a second Fill: %d made, %d counted; want 1 and 1", m.n, set.Count())
	}
	sl.Close()
	waitClosed(t, th)
	sl.Fill() // closed: makes none
	if m.n != 1 || set.Count() != 0 {
		t.Fatalf("Fill on a closed slot: %d made, %d counted; want 1 and 0", m.n, set.Count())
	}
}
