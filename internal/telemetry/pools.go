package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolStat is a snapshot of one version's instance pool on this node.
type PoolStat struct {
	Tenant, Function                                string
	Version                                         int
	Starting, Idle, Busy, Desired, InFlight, Queued int
}

// RegisterPools adds a source of pool snapshots; it is called on every scrape
// (pulled, so the scaler pushes nothing on its hot path). Versions of one
// function are summed.
func (m *Metrics) RegisterPools(f func() []PoolStat) {
	m.pools.mu.Lock()
	m.pools.sources = append(m.pools.sources, f)
	m.pools.mu.Unlock()
}

// poolCollector turns pool snapshots into gauges at scrape time.
type poolCollector struct {
	mu                                   sync.Mutex
	sources                              []func() []PoolStat
	instances, inFlight, queued, desired *prometheus.Desc
}

func (c *poolCollector) init() {
	fl := []string{"tenant", "function"}
	c.instances = prometheus.NewDesc("nimbus_instances", "Instances by state (starting, idle, busy).", []string{"tenant", "function", "state"}, nil)
	c.inFlight = prometheus.NewDesc("nimbus_in_flight", "Invocations running now.", fl, nil)
	c.queued = prometheus.NewDesc("nimbus_queue_depth", "Invocations waiting for an instance.", fl, nil)
	c.desired = prometheus.NewDesc("nimbus_desired_instances", "Instances the autoscaler wants.", fl, nil)
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.inFlight
	ch <- c.queued
	ch <- c.desired
}

// Snapshot sums every source's stats per (tenant, function).
func (c *poolCollector) snapshot() map[fnKey]*PoolStat {
	c.mu.Lock()
	sources := append([]func() []PoolStat(nil), c.sources...)
	c.mu.Unlock()
	agg := map[fnKey]*PoolStat{}
	for _, f := range sources {
		for _, st := range f() {
			k := fnKey{st.Tenant, st.Function}
			a := agg[k]
			if a == nil {
				a = &PoolStat{Tenant: st.Tenant, Function: st.Function}
				agg[k] = a
			}
			a.Starting += st.Starting
			a.Idle += st.Idle
			a.Busy += st.Busy
			a.Desired += st.Desired
			a.InFlight += st.InFlight
			a.Queued += st.Queued
		}
	}
	return agg
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.snapshot() {
		g := func(d *prometheus.Desc, v int, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), append([]string{a.Tenant, a.Function}, extra...)...)
		}
		g(c.instances, a.Starting, "starting")
		g(c.instances, a.Idle, "idle")
		g(c.instances, a.Busy, "busy")
		g(c.inFlight, a.InFlight)
		g(c.queued, a.Queued)
		g(c.desired, a.Desired)
	}
}
