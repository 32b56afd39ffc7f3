package scaler

import (
	"context"
	"sync"
	"time"
)

// Manager ticks a set of pools (idle scale-down, min instances, autoscaler
// samples) from one goroutine.
type Manager struct {
	mu    sync.Mutex
	pools map[*Pool]struct{}
	stop  context.CancelFunc
	done  chan struct{}
	every time.Duration
}

// NewManager builds a Manager that ticks every interval (default 1 s).
func NewManager(every time.Duration) *Manager {
	if every <= 0 {
		every = time.Second
	}
	return &Manager{pools: map[*Pool]struct{}{}, every: every}
}

// Add puts p under management.
func (m *Manager) Add(p *Pool) {
	m.mu.Lock()
	m.pools[p] = struct{}{}
	m.mu.Unlock()
	p.Tick(time.Now())
}

// Remove closes p and stops managing it.
func (m *Manager) Remove(p *Pool) {
	m.mu.Lock()
	delete(m.pools, p)
	m.mu.Unlock()
	p.Close()
}

// Start begins ticking.
func (m *Manager) Start(ctx context.Context) error {
	ctx, m.stop = context.WithCancel(context.Background())
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(m.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				m.mu.Lock()
				ps := make([]*Pool, 0, len(m.pools))
				for p := range m.pools {
					ps = append(ps, p)
				}
				m.mu.Unlock()
				for _, p := range ps {
					p.Tick(now)
				}
			}
		}
	}()
	return nil
}

// Stop stops ticking and closes every pool.
func (m *Manager) Stop(ctx context.Context) error {
	if m.stop != nil {
		m.stop()
		<-m.done
	}
	m.mu.Lock()
	ps := m.pools
	m.pools = map[*Pool]struct{}{}
	m.mu.Unlock()
	for p := range ps {
		p.Close()
	}
	return nil
}
