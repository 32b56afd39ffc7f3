package auth

import (
	"math"
	"sync"
	"time"
)

// limiter is a set of token buckets keyed by string (an IP, or tenant+email):
// each key may spend Burst requests at once, refilled at Rate per second.
type limiter struct {
	rate, burst float64
	mu          sync.Mutex
	m           map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), m: map[string]*tokenBucket{}}
}

// maxTracked bounds the keys a limiter or lockout table remembers; beyond it
// idle keys are swept at once.
const maxTracked = 100_000

// allow spends one token of key; when none is left it says how long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxTracked {
			l.sweepLocked(now)
		}
		b = &tokenBucket{tokens: l.burst, last: now}
		l.m[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweepLocked forgets buckets that have refilled completely.
func (l *limiter) sweepLocked(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, k)
		}
	}
}

func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

// lockout counts consecutive failed logins per key and locks the key for a
// period after max failures.
type lockout struct {
	max    int
	period time.Duration
	mu     sync.Mutex
	m      map[string]*failures
}

type failures struct {
	n           int
	last        time.Time
	lockedUntil time.Time
}

func newLockout(max int, period time.Duration) *lockout {
	return &lockout{max: max, period: period, m: map[string]*failures{}}
}

// locked says whether key is locked, and for how much longer.
func (l *lockout) locked(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[key]
	if !ok || !now.Before(f.lockedUntil) {
		return false, 0
	}
	return true, f.lockedUntil.Sub(now)
}

// fail records a failure; it reports whether this failure locked the key.
func (l *lockout) fail(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxTracked {
			l.sweepLocked(now)
		}
		f = &failures{}
		l.m[key] = f
	}
	// Failures older than a lockout period no longer count.
	if now.Sub(f.last) > l.period {
		f.n = 0
	}
	f.n++
	f.last = now
	if f.n >= l.max {
		f.n = 0
		f.lockedUntil = now.Add(l.period)
		return true
	}
	return false
}

// reset forgets key's failures (after a successful login or a password reset).
func (l *lockout) reset(key string) {
	l.mu.Lock()
	delete(l.m, key)
	l.mu.Unlock()
}

func (l *lockout) sweepLocked(now time.Time) {
	for k, f := range l.m {
		if !now.Before(f.lockedUntil) && now.Sub(f.last) > l.period {
			delete(l.m, k)
		}
	}
}

func (l *lockout) sweep(now time.Time) {
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}
