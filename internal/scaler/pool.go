// Package scaler owns the per-version instance pools: how many instances run,
// how many requests each takes, cold starts without stampedes, the bounded
// wait queue, scale to zero, and the autoscaler's desired count.
package scaler

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Config bounds one pool. Zero values take the documented defaults (Defaults).
type Config struct {
	// Concurrency is how many requests one instance takes at once.
	Concurrency int
	// Min instances are kept warm; Max caps instances on this node.
	Min, Max int
	// Idle is how long an unused instance lives before it is closed.
	Idle time.Duration
	// QueueMax requests may wait for an instance, each for at most QueueTimeout.
	QueueMax     int
	QueueTimeout time.Duration
	// MaxRequests retires an instance after that many invocations (0 = never).
	MaxRequests int
	// InlineStart lets a request that needs a new instance start it itself,
	// in its own goroutine, instead of handing the start to another
	// goroutine and waiting for it: two goroutine hand-offs fewer on a cold
	// start. Meant for runtimes whose starts are short (wasm): such a request
	// waits for its start to finish even past QueueTimeout or its context.
	InlineStart bool
}

// Defaults fills zero fields: concurrency 1, max 100, idle 60 s, queue 1000 for 10 s.
func (c Config) Defaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Max <= 0 {
		c.Max = 100
	}
	if c.Min > c.Max {
		c.Min = c.Max
	}
	if c.Idle <= 0 {
		c.Idle = 60 * time.Second
	}
	if c.QueueMax <= 0 {
		c.QueueMax = 1000
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = 10 * time.Second
	}
	return c
}

// StartFunc starts one instance (a cold start).
type StartFunc func(ctx context.Context) (runtime.Instance, error)

// Pool holds the instances of one function version on this node.
type Pool struct {
	cfg   Config
	start StartFunc
	log   *slog.Logger

	mu       sync.Mutex
	all      map[*instance]struct{}
	free     []*instance // instances with spare capacity, most recently used last
	starting int
	// inline counts the starts run by requests themselves (InlineStart);
	// each takes one slot of the instance it starts. They are in starting.
	inline  int
	waiters []*waiter
	closed  bool
	lastErr error // last start failure, handed to waiters when nothing else can serve them

	inFlight atomic.Int64
	stats    windowStats
}

type instance struct {
	rt       runtime.Instance
	inFlight int
	served   int
	lastUsed time.Time
	inFree   bool
}

type waiter struct {
	ch  chan grant
	pos int
}

type grant struct {
	inst *instance
	cold bool
	init time.Duration
	err  error
}

// Lease is one acquired slot on an instance.
type Lease struct {
	Instance runtime.Instance
	// Cold is true when this request waited for a new instance to start.
	Cold bool
	// Init is how long that start took.
	Init time.Duration
	inst *instance
}

// NewPool builds a pool; instances are started by start.
func NewPool(cfg Config, start StartFunc, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.Default()
	}
	return &Pool{cfg: cfg.Defaults(), start: start, log: log, all: map[*instance]struct{}{}}
}

// Config returns the pool's effective configuration.
func (p *Pool) Config() Config { return p.cfg }

// ErrClosed is returned by Acquire on a pool that was closed (function deleted
// or redeployed while the request waited).
var ErrClosed = errors.New("the function's instance pool was closed")

// Acquire returns a slot on an instance: a free one at once, else it waits for
// one to free up or to start (starting one if the pool may grow), at most
// QueueTimeout, then fails with 429.
func (p *Pool) Acquire(ctx context.Context) (*Lease, error) {
	p.inFlight.Add(1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.inFlight.Add(-1)
		return nil, ErrClosed
	}
	if n := len(p.free); n > 0 {
		in := p.free[n-1]
		p.take(in)
		p.mu.Unlock()
		return &Lease{Instance: in.rt, inst: in}, nil
	}
	if p.cfg.InlineStart && p.needsStartLocked(1) {
		p.starting++
		p.inline++
		p.mu.Unlock()
		return p.startInline(ctx)
	}
	if len(p.waiters) >= p.cfg.QueueMax {
		p.mu.Unlock()
		p.inFlight.Add(-1)
		p.stats.throttled.Add(1)
		return nil, p.throttle("its wait queue is full (%d waiting)", p.cfg.QueueMax)
	}
	w := &waiter{ch: make(chan grant, 1)}
	p.waiters = append(p.waiters, w)
	p.growLocked()
	p.mu.Unlock()
	return p.wait(ctx, w)
}

// wait waits for w to be granted an instance, at most QueueTimeout.
func (p *Pool) wait(ctx context.Context, w *waiter) (*Lease, error) {
	timer := time.NewTimer(p.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return p.granted(g)
	case <-ctx.Done():
		if g, ok := p.abandon(w); ok {
			return p.granted(g)
		}
		p.inFlight.Add(-1)
		return nil, ctx.Err()
	case <-timer.C:
		if g, ok := p.abandon(w); ok {
			return p.granted(g)
		}
		p.inFlight.Add(-1)
		p.stats.throttled.Add(1)
		return nil, p.throttle("no instance became free within %s (max %d instances × concurrency %d)", p.cfg.QueueTimeout, p.cfg.Max, p.cfg.Concurrency)
	}
}

// startInline starts an instance in the requesting goroutine and takes a
// slot on it; spare slots go to waiting requests. p.starting and p.inline
// were counted by the caller.
func (p *Pool) startInline(ctx context.Context) (*Lease, error) {
	in, init, err := p.run(context.WithoutCancel(ctx))
	p.mu.Lock()
	p.starting--
	p.inline--
	if err != nil && p.closed {
		// The version went away while it started (its template closed
		// under the start): the request follows the registry, as any
		// request that finds the pool closed does.
		p.mu.Unlock()
		p.inFlight.Add(-1)
		return nil, ErrClosed
	}
	if err != nil {
		p.startFailedLocked(err)
		if len(p.all)+p.starting == 0 || p.closed {
			p.mu.Unlock()
			p.inFlight.Add(-1)
			p.log.Warn("instance failed to start", "err", err)
			return nil, err
		}
		// Other instances run or start: wait for one of them, as a request
		// whose start failed in another goroutine would (without starting
		// another instance for it at once).
		w := &waiter{ch: make(chan grant, 1)}
		p.waiters = append(p.waiters, w)
		p.mu.Unlock()
		p.log.Warn("instance failed to start", "err", err)
		return p.wait(ctx, w)
	}
	if p.closed {
		p.mu.Unlock()
		_ = in.rt.Close()
		p.inFlight.Add(-1)
		return nil, ErrClosed
	}
	gone := ctx.Err()
	if gone == nil {
		in.inFlight++ // the requester's slot
	}
	p.addLocked(in, init)
	p.mu.Unlock()
	if gone != nil {
		p.inFlight.Add(-1)
		return nil, gone
	}
	return &Lease{Instance: in.rt, inst: in, Cold: true, Init: init}, nil
}

func (p *Pool) granted(g grant) (*Lease, error) {
	if g.err != nil {
		p.inFlight.Add(-1)
		return nil, g.err
	}
	return &Lease{Instance: g.inst.rt, inst: g.inst, Cold: g.cold, Init: g.init}, nil
}

func (p *Pool) throttle(format string, args ...any) error {
	secs := int(math.Ceil(p.cfg.QueueTimeout.Seconds()))
	if secs < 1 {
		secs = 1
	}
	e := apierr.New(apierr.TooManyRequests, "the function is at its scale limit: "+format+"; retry later", args...)
	e.Header = map[string][]string{"Retry-After": {strconv.Itoa(secs)}}
	return e
}

// abandon removes w from the queue. If an instance was already granted to it,
// it returns that grant instead.
func (p *Pool) abandon(w *waiter) (grant, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return grant{}, false
		}
	}
	// Already granted: the grant is in the channel (buffered).
	return <-w.ch, true
}

// take marks one more request on in. p.mu held.
func (p *Pool) take(in *instance) {
	in.inFlight++
	if in.inFlight >= p.cfg.Concurrency && in.inFree {
		p.removeFree(in)
	}
}

func (p *Pool) removeFree(in *instance) {
	for i := len(p.free) - 1; i >= 0; i-- {
		if p.free[i] == in {
			p.free = append(p.free[:i], p.free[i+1:]...)
			break
		}
	}
	in.inFree = false
}

// needsStartLocked reports whether extra more requests, beyond those
// waiting and those starting instances themselves, need an instance started
// for them, and the pool may start one. p.mu held.
func (p *Pool) needsStartLocked(extra int) bool {
	return p.starting*p.cfg.Concurrency < len(p.waiters)+p.inline+extra && len(p.all)+p.starting < p.cfg.Max
}

// growLocked starts instances while the waiting requests exceed what the
// instances being started will take, within Max. p.mu held.
func (p *Pool) growLocked() {
	for p.needsStartLocked(0) {
		p.starting++
		go p.startOne()
	}
	if len(p.all)+p.starting == 0 && len(p.waiters) > 0 && p.cfg.Max > 0 {
		// Cannot happen with Max ≥ 1; kept so that a waiter never hangs on a
		// pool that will never start anything.
		p.failWaitersLocked(errors.New("the pool may not start instances"))
	}
}

// run starts one instance.
func (p *Pool) run(ctx context.Context) (*instance, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	rt, err := p.start(ctx)
	init := time.Since(t0)
	if err != nil {
		return nil, init, err
	}
	return &instance{rt: rt, lastUsed: time.Now()}, init, nil
}

// startFailedLocked records a failed start. With nothing running or
// starting, nobody could serve the waiting requests: they fail with the
// reason now rather than at their timeout. p.mu held.
func (p *Pool) startFailedLocked(err error) {
	p.lastErr = err
	p.stats.startFailures.Add(1)
	if len(p.all)+p.starting == 0 {
		p.failWaitersLocked(err)
	}
}

func (p *Pool) startOne() {
	in, init, err := p.run(context.Background())
	p.mu.Lock()
	p.starting--
	if err != nil {
		p.startFailedLocked(err)
		p.mu.Unlock()
		p.log.Warn("instance failed to start", "err", err)
		return
	}
	if p.closed {
		p.mu.Unlock()
		_ = in.rt.Close()
		return
	}
	p.addLocked(in, init)
	p.mu.Unlock()
}

// addLocked adds a started instance to the pool, grants its spare slots to
// waiting requests and keeps it free if slots remain. p.mu held.
func (p *Pool) addLocked(in *instance, init time.Duration) {
	p.stats.coldStarts.Add(1)
	p.all[in] = struct{}{}
	for in.inFlight < p.cfg.Concurrency && len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		in.inFlight++
		w.ch <- grant{inst: in, cold: true, init: init}
	}
	if in.inFlight < p.cfg.Concurrency {
		p.free = append(p.free, in)
		in.inFree = true
	}
}

func (p *Pool) failWaitersLocked(err error) {
	for _, w := range p.waiters {
		w.ch <- grant{err: err}
	}
	p.waiters = nil
}

// Release returns a lease. err is the invocation's outcome: an instance that
// failed in a way that is not reusable is closed and never serves again.
func (p *Pool) Release(l *Lease, err error) {
	p.inFlight.Add(-1)
	in := l.inst
	p.mu.Lock()
	in.inFlight--
	in.served++
	in.lastUsed = time.Now()
	discard := !runtime.Reusable(err) || (p.cfg.MaxRequests > 0 && in.served >= p.cfg.MaxRequests) || p.closed
	if discard {
		if in.inFree {
			p.removeFree(in)
		}
		delete(p.all, in)
		// Stop new work going to it; close once its other requests finish.
		if in.inFlight == 0 || !runtime.Reusable(err) {
			go in.rt.Close()
		}
		if !runtime.Reusable(err) {
			p.stats.discarded.Add(1)
		}
		p.growLocked()
		p.mu.Unlock()
		return
	}
	if _, live := p.all[in]; !live {
		if in.inFlight == 0 {
			go in.rt.Close()
		}
		p.mu.Unlock()
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		in.inFlight++
		p.mu.Unlock()
		w.ch <- grant{inst: in}
		return
	}
	if !in.inFree {
		p.free = append(p.free, in)
		in.inFree = true
	}
	p.mu.Unlock()
}

// Tick runs housekeeping: closes instances idle for longer than Idle (never
// going below Min) and starts instances up to Min. The manager calls it about
// once a second.
func (p *Pool) Tick(now time.Time) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.stats.sample(p.inFlight.Load(), len(p.waiters))
	var victims []*instance
	keep := len(p.all)
	for i := 0; i < len(p.free) && keep > p.cfg.Min; {
		in := p.free[i]
		if in.inFlight == 0 && now.Sub(in.lastUsed) >= p.cfg.Idle {
			p.free = append(p.free[:i], p.free[i+1:]...)
			in.inFree = false
			delete(p.all, in)
			victims = append(victims, in)
			keep--
			continue
		}
		i++
	}
	for len(p.all)+p.starting < p.cfg.Min {
		p.starting++
		go p.startOne()
	}
	p.mu.Unlock()
	for _, in := range victims {
		_ = in.rt.Close()
	}
}

// Close closes every instance and fails waiting requests; in-flight requests
// finish and their instances are closed on release.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.failWaitersLocked(ErrClosed)
	var idle []*instance
	for in := range p.all {
		if in.inFlight == 0 {
			idle = append(idle, in)
		}
	}
	p.all = map[*instance]struct{}{}
	p.free = nil
	p.mu.Unlock()
	for _, in := range idle {
		_ = in.rt.Close()
	}
}

// Stats is a pool's current state, for the API and metrics.
type Stats struct {
	Starting    int   `json:"starting"`
	Idle        int   `json:"idle"`
	Busy        int   `json:"busy"`
	Desired     int   `json:"desired"`
	InFlight    int   `json:"in_flight"`
	Queued      int   `json:"queued"`
	ColdStarts  int64 `json:"cold_starts"`
	Throttled   int64 `json:"throttled"`
	Discarded   int64 `json:"discarded"`
	StartErrors int64 `json:"start_failures"`
}

// Stats returns the pool's current state.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{Starting: p.starting, Queued: len(p.waiters), InFlight: int(p.inFlight.Load())}
	for in := range p.all {
		if in.inFlight == 0 {
			s.Idle++
		} else {
			s.Busy++
		}
	}
	p.mu.Unlock()
	s.Desired = p.desired()
	s.ColdStarts = p.stats.coldStarts.Load()
	s.Throttled = p.stats.throttled.Load()
	s.Discarded = p.stats.discarded.Load()
	s.StartErrors = p.stats.startFailures.Load()
	return s
}
