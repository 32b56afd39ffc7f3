package scaler

import (
	"math"
	"sync"
	"sync/atomic"
)

// Autoscaling in the spirit of Knative's KPA: the pool samples its load (in-flight
// plus queued requests) once a second; desired = ceil(average load over the
// stable window / (concurrency × target utilisation)). The panic window reacts
// to bursts: while its average reaches twice the current capacity the desired
// count follows it and never goes down. Instances are started on demand by
// Acquire (so a burst never waits for a tick), and closed by Tick only after
// Idle without work, which makes scale-down gradual.
const (
	stableWindow      = 60 // samples (seconds)
	panicWindow       = 6
	targetUtilisation = 0.7
)

type windowStats struct {
	coldStarts, throttled, discarded, startFailures atomic.Int64

	mu        sync.Mutex
	samples   [stableWindow]float64
	n, next   int
	panicking bool
	lastDes   int
}

func (w *windowStats) sample(inFlight int64, queued int) {
	w.mu.Lock()
	w.samples[w.next] = float64(inFlight) + float64(queued)
	w.next = (w.next + 1) % stableWindow
	if w.n < stableWindow {
		w.n++
	}
	w.mu.Unlock()
}

// avg returns the mean of the last k samples.
func (w *windowStats) avg(k int) float64 {
	if k > w.n {
		k = w.n
	}
	if k == 0 {
		return 0
	}
	sum := 0.0
	for i := 1; i <= k; i++ {
		sum += w.samples[(w.next-i+stableWindow)%stableWindow]
	}
	return sum / float64(k)
}

// desired computes the autoscaler's instance count for this pool.
func (p *Pool) desired() int {
	per := float64(p.cfg.Concurrency) * targetUtilisation
	p.mu.Lock()
	current := len(p.all) + p.starting
	p.mu.Unlock()
	w := &p.stats
	w.mu.Lock()
	defer w.mu.Unlock()
	stable := int(math.Ceil(w.avg(stableWindow) / per))
	panicDes := int(math.Ceil(w.avg(panicWindow) / per))
	capacity := float64(current * p.cfg.Concurrency)
	if w.avg(panicWindow) >= 2*capacity && w.avg(panicWindow) > 0 {
		w.panicking = true
	} else if stable <= current {
		w.panicking = false
	}
	d := stable
	if w.panicking {
		d = max(panicDes, w.lastDes)
	}
	d = max(d, p.cfg.Min)
	d = min(d, p.cfg.Max)
	w.lastDes = d
	return d
}
