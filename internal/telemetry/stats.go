package telemetry

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// FunctionStats is a live summary of one function on this node, for
// `nimbus top`: counters since start (clients diff them for rates), latency
// quantiles estimated from the duration histogram, and the pools' state.
type FunctionStats struct {
	Tenant      string  `json:"tenant"`
	Function    string  `json:"function"`
	Invocations uint64  `json:"invocations"`
	Errors      uint64  `json:"errors"`
	Throttled   uint64  `json:"throttled"`
	ColdStarts  uint64  `json:"cold_starts"`
	P50         float64 `json:"p50_seconds"`
	P99         float64 `json:"p99_seconds"`
	Instances   int     `json:"instances"`
	Busy        int     `json:"busy"`
	InFlight    int     `json:"in_flight"`
	Queued      int     `json:"queued"`
}

// Stats summarises the functions of tenant ("" for every tenant).
func (m *Metrics) Stats(tenant string) []FunctionStats {
	pools := m.pools.snapshot()
	seen := map[fnKey]bool{}
	var out []FunctionStats
	m.fns.Range(func(k, v any) bool {
		key, s := k.(fnKey), v.(*fnSeries)
		if tenant != "" && key.tenant != tenant {
			return true
		}
		st := FunctionStats{Tenant: s.tenant, Function: s.function, Invocations: s.total.Load(), Errors: s.errors.Load(),
			Throttled: s.throttled.Load(), ColdStarts: s.colds.Load()}
		var dm dto.Metric
		if s.hist.(prometheus.Metric).Write(&dm) == nil && dm.Histogram != nil {
			st.P50, st.P99 = quantile(0.5, dm.Histogram), quantile(0.99, dm.Histogram)
		}
		if p := pools[key]; p != nil {
			st.Instances, st.Busy, st.InFlight, st.Queued = p.Starting+p.Idle+p.Busy, p.Busy, p.InFlight, p.Queued
		}
		seen[key] = true
		out = append(out, st)
		return true
	})
	for k, p := range pools { // warm pools of functions not invoked since start
		if seen[k] || (tenant != "" && k.tenant != tenant) {
			continue
		}
		out = append(out, FunctionStats{Tenant: k.tenant, Function: k.function, Instances: p.Starting + p.Idle + p.Busy,
			Busy: p.Busy, InFlight: p.InFlight, Queued: p.Queued})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].Function < out[j].Function
	})
	return out
}

// quantile estimates the q-quantile from cumulative buckets by linear
// interpolation inside the bucket, as PromQL's histogram_quantile does.
func quantile(q float64, h *dto.Histogram) float64 {
	total := h.GetSampleCount()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	lower, prev := 0.0, uint64(0)
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), b.GetCumulativeCount()
		if float64(count) >= rank {
			if math.IsInf(upper, 1) {
				return lower
			}
			inBucket := float64(count - prev)
			if inBucket == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-float64(prev))/inBucket
		}
		lower, prev = upper, count
	}
	return lower
}

// StatsHandler serves GET /api/v1/stats: {"functions":[FunctionStats…]} of
// the caller's tenant (tenantOf, after authentication).
func (m *Metrics) StatsHandler(tenantOf func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stats := m.Stats(tenantOf(r))
		if stats == nil {
			stats = []FunctionStats{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"functions": stats})
	})
}
