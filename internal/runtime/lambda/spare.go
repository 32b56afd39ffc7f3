package lambda

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Spares. Most of what Nimbus adds to a Lambda cold start is the sandbox's
// work before the bootstrap's first instruction: fork, namespaces, exec,
// the cgroup join, rlimits and the private file system, 2–3 ms on our
// machines. A template keeps one spare made ahead: its Runtime API server
// listening and its process set up and held stopped before its first
// instruction (sandbox.Config.Held). No code of the function has run in it
// and it uses no CPU; a cold start lets it go instead of starting a
// process. A spare is made when a template is prepared and again shortly
// after each start of an instance; a spare unused for SpareLinger is
// killed, and at most MaxSpares exist at once: a new one replaces the
// spare made longest ago, a function just used being likelier to start
// again than one idle longer. Where processes cannot be
// held (no ptrace), there are no spares.
var (
	MaxSpares   = 8
	SpareLinger = 10 * time.Minute
)

// spareDelay separates making a spare from the start that used the last
// one, so that the two do not compete.
const spareDelay = 100 * time.Millisecond

// spares is a template's spare and what is being done about it.
type spares struct {
	mu      sync.Mutex
	in      *instance     // the spare, held
	making  chan struct{} // closed when the spare being made is ready or failed
	pending bool          // a refill is scheduled
	linger  *time.Timer
	closed  bool
}

// takeSpare returns the template's spare, waiting for one being made (it
// started earlier than any start made now would), or nil.
func (t *template) takeSpare(ctx context.Context) *instance {
	s := &t.spares
	s.mu.Lock()
	for s.in == nil && s.making != nil {
		ch := s.making
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
		s.mu.Lock()
	}
	in := s.take()
	s.mu.Unlock()
	return in
}

// take removes the spare; s.mu held.
func (s *spares) take() *instance {
	in := s.in
	s.in = nil
	if s.linger != nil {
		s.linger.Stop()
		s.linger = nil
	}
	if in != nil {
		rt := in.t.rt
		rt.spares.Add(-1)
		rt.heldMu.Lock()
		for i, t := range rt.held {
			if t == in.t {
				rt.held = append(rt.held[:i], rt.held[i+1:]...)
				break
			}
		}
		rt.heldMu.Unlock()
	}
	return in
}

// evictOldest kills the spare made longest ago, unless it is except's.
func (rt *Runtime) evictOldest(except *template) {
	rt.heldMu.Lock()
	var victim *template
	if len(rt.held) > 0 && rt.held[0] != except {
		victim = rt.held[0]
	}
	rt.heldMu.Unlock()
	if victim == nil {
		return
	}
	victim.spares.mu.Lock()
	in := victim.spares.take()
	victim.spares.mu.Unlock()
	if in != nil {
		go in.Close()
	}
}

// refillLater makes a spare after spareDelay unless one exists or is on
// its way.
func (t *template) refillLater() {
	s := &t.spares
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending || s.closed || s.in != nil || s.making != nil || t.rt.noSpares.Load() {
		return
	}
	s.pending = true
	time.AfterFunc(spareDelay, func() {
		s.mu.Lock()
		s.pending = false
		s.mu.Unlock()
		t.makeSpare()
	})
}

// makeSpare makes the template's spare unless it has one, one is being
// made, or the runtime has MaxSpares.
func (t *template) makeSpare() {
	if done := t.reserveSpare(); done != nil {
		t.buildSpare(done)
	}
}

// reserveSpare claims the making of the template's spare, or returns nil
// when it has one, one is being made, or the runtime has MaxSpares.
func (t *template) reserveSpare() chan struct{} {
	s := &t.spares
	rt := t.rt
	if rt.spares.Load() >= int32(MaxSpares) && !rt.noSpares.Load() {
		rt.evictOldest(t)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.in != nil || s.making != nil || rt.noSpares.Load() {
		return nil
	}
	if rt.spares.Add(1) > int32(MaxSpares) {
		rt.spares.Add(-1)
		return nil
	}
	s.making = make(chan struct{})
	return s.making
}

// buildSpare makes the spare reserveSpare claimed; done is closed when it
// is ready or failed.
func (t *template) buildSpare(done chan struct{}) {
	s := &t.spares
	rt := t.rt
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StartTimeout)
	in, err := t.launch(ctx, true)
	cancel()
	if err == nil && !in.p.Held() {
		// It runs: this machine cannot hold processes. A running spare
		// would run the function's init with no instance to show for it.
		rt.noSpares.Store(true)
		rt.log.Info("no spare instances: processes cannot be held stopped here")
		_ = in.Close()
		in, err = nil, errNotHeld
	}

	s.mu.Lock()
	s.making = nil
	close(done)
	if err != nil || s.closed {
		s.mu.Unlock()
		rt.spares.Add(-1)
		if in != nil {
			_ = in.Close()
		}
		if err != nil && err != errNotHeld {
			rt.log.Debug("making a spare instance failed", "function", t.spec.Function, "err", err)
		}
		return
	}
	s.in = in
	rt.heldMu.Lock()
	rt.held = append(rt.held, t)
	rt.heldMu.Unlock()
	s.linger = time.AfterFunc(SpareLinger, func() {
		s.mu.Lock()
		var old *instance
		if s.in == in {
			old = s.take()
		}
		s.mu.Unlock()
		if old != nil {
			_ = old.Close()
		}
	})
	s.mu.Unlock()
}

// closeSpares kills the spare and makes no more.
func (t *template) closeSpares() {
	s := &t.spares
	s.mu.Lock()
	s.closed = true
	in := s.take()
	s.mu.Unlock()
	if in != nil {
		_ = in.Close()
	}
}

// spareCount reports how many spare instances the runtime holds.
func (rt *Runtime) spareCount() int { return int(rt.spares.Load()) }

var errNotHeld = errors.New("the process could not be held")
