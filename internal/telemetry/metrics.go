package telemetry

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nimbusfn/nimbus/internal/metering"
)

// OtherFunction is the function label of series beyond the cardinality cap.
const OtherFunction = "_other"

// DefaultMaxSeries caps how many (tenant, function) label pairs Metrics keeps.
const DefaultMaxSeries = 5000

// DurationBuckets are the invocation duration histogram's bounds, in seconds:
// from sub-millisecond warm wasm calls to the 15-minute timeout.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900}

// The label values of outcome and trigger are a closed set, so that a bad
// record cannot blow up the series count; anything else is "other".
var (
	outcomeLabels = []string{metering.OutcomeOK, metering.OutcomeError, metering.OutcomeCrashed, metering.OutcomeTimeout,
		metering.OutcomeOutOfMemory, metering.OutcomeBadResponse, metering.OutcomeStartFailed, metering.OutcomeThrottled,
		metering.OutcomeCanceled, metering.OutcomeBadCode, metering.OutcomeFunctionErr, "other"}
	triggerLabels = []string{"http", "async", "schedule", "topic", "queue", "kv", "objects", "mqtt", "other"}
)

func outcomeIndex(s string) int {
	for i, o := range outcomeLabels[:len(outcomeLabels)-1] {
		if o == s {
			return i
		}
	}
	return len(outcomeLabels) - 1
}

func triggerIndex(s string) int {
	for i, o := range triggerLabels[:len(triggerLabels)-1] {
		if o == s {
			return i
		}
	}
	return len(triggerLabels) - 1
}

// Metrics is Nimbus's Prometheus registry and the per-invocation metrics.
// Observe is safe for concurrent use and, once a function's series exist,
// takes no lock shared across functions and allocates nothing.
type Metrics struct {
	reg *prometheus.Registry

	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cold        *prometheus.CounterVec
	throttles   *prometheus.CounterVec
	billedMS    *prometheus.CounterVec
	gbSeconds   *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec

	maxSeries int
	series    atomic.Int64
	fns       sync.Map // fnKey → *fnSeries
	newMu     sync.Mutex

	pools poolCollector
}

type fnKey struct{ tenant, function string }

// fnSeries holds the label-bound children of one (tenant, function).
type fnSeries struct {
	tenant, function string
	duration         prometheus.Observer
	hist             prometheus.Histogram
	cold, throttles  prometheus.Counter
	billedMS, gbs    prometheus.Counter
	retries, dead    prometheus.Counter
	// invocations[outcome][trigger], bound on first use.
	invocations [12][9]atomic.Pointer[prometheus.Counter]
	// counts for Stats (cheap atomics next to the Prometheus children).
	total, errors, throttled, colds atomic.Uint64
}

// MetricsConfig configures Metrics; the zero value is fine.
type MetricsConfig struct {
	// MaxSeries caps the (tenant, function) pairs; beyond it a tenant's new
	// functions share function="_other" (one more pair per tenant). Default
	// DefaultMaxSeries.
	MaxSeries int
}

// NewMetrics builds the registry with the invocation metrics and the Go
// runtime and process collectors.
func NewMetrics() *Metrics { return NewMetricsWith(MetricsConfig{}) }

// NewMetricsWith is NewMetrics with a config.
func NewMetricsWith(cfg MetricsConfig) *Metrics {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	fl := []string{"tenant", "function"}
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		maxSeries: cfg.MaxSeries,
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_invocations_total", Help: "Invocations by tenant, function, outcome and trigger.",
		}, []string{"tenant", "function", "outcome", "trigger"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nimbus_invocation_duration_seconds", Help: "Time inside the instance per invocation (excluding queueing and cold start).",
			Buckets: DurationBuckets,
		}, fl),
		cold: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_cold_starts_total", Help: "Invocations that started a new instance.",
		}, fl),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_throttles_total", Help: "Invocations refused by a quota or a full queue (outcome throttled).",
		}, fl),
		billedMS: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_billed_ms_total", Help: "Billed milliseconds (duration rounded up to 1 ms).",
		}, fl),
		gbSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_gb_seconds_total", Help: "Billed GB-seconds (billed ms × configured memory).",
		}, fl),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_async_retries_total", Help: "Async invocation retries.",
		}, fl),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_dead_letters_total", Help: "Async events moved to the dead-letter stream.",
		}, fl),
	}
	m.pools.init()
	m.reg.MustRegister(m.invocations, m.duration, m.cold, m.throttles, m.billedMS, m.gbSeconds,
		m.retries, m.deadLetters, &m.pools,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the Prometheus registry, for other components' collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats (/metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Record is Observe; it lets Metrics be one of the invoker's recorders.
func (m *Metrics) Record(rec *metering.Record) { m.Observe(rec) }

// Observe counts one invocation record.
func (m *Metrics) Observe(rec *metering.Record) {
	s := m.fn(rec.Tenant, rec.Function)
	oi, ti := outcomeIndex(rec.Outcome), triggerIndex(rec.Trigger)
	c := s.invocations[oi][ti].Load()
	if c == nil {
		c = s.bindInvocations(m, oi, ti)
	}
	(*c).Inc()
	s.total.Add(1)
	if rec.Outcome == metering.OutcomeThrottled {
		s.throttles.Inc()
		s.throttled.Add(1)
		return
	}
	if rec.Outcome != metering.OutcomeOK {
		s.errors.Add(1)
	}
	if rec.Cold {
		s.cold.Inc()
		s.colds.Add(1)
	}
	if billed := metering.BilledMS(rec); billed > 0 {
		s.duration.Observe(float64(rec.DurationNS) / 1e9)
		s.billedMS.Add(float64(billed))
		s.gbs.Add(metering.GBSeconds(billed, rec.MemoryMB))
	}
}

// AsyncRetry counts one retry of an async invocation of tenant's fn.
func (m *Metrics) AsyncRetry(tenant, fn string) { m.fn(tenant, fn).retries.Inc() }

// DeadLetter counts one async event of tenant's fn moved to the dead letters.
func (m *Metrics) DeadLetter(tenant, fn string) { m.fn(tenant, fn).dead.Inc() }

func (s *fnSeries) bindInvocations(m *Metrics, oi, ti int) *prometheus.Counter {
	c := m.invocations.WithLabelValues(s.tenant, s.function, outcomeLabels[oi], triggerLabels[ti])
	s.invocations[oi][ti].CompareAndSwap(nil, &c)
	return s.invocations[oi][ti].Load()
}

// fn returns the series of (tenant, function), binding them on first use.
func (m *Metrics) fn(tenant, function string) *fnSeries {
	if s, ok := m.fns.Load(fnKey{tenant, function}); ok {
		return s.(*fnSeries)
	}
	return m.bind(tenant, function)
}

func (m *Metrics) bind(tenant, function string) *fnSeries {
	m.newMu.Lock()
	defer m.newMu.Unlock()
	k := fnKey{tenant, function}
	if s, ok := m.fns.Load(k); ok {
		return s.(*fnSeries)
	}
	if function != OtherFunction && m.series.Load() >= int64(m.maxSeries) {
		// Over the cap: share the tenant's "_other" series (not cached under
		// k, so that memory stays bounded too).
		ok := fnKey{tenant, OtherFunction}
		if s, found := m.fns.Load(ok); found {
			return s.(*fnSeries)
		}
		k, function = ok, OtherFunction
	}
	s := &fnSeries{tenant: tenant, function: function}
	h := m.duration.WithLabelValues(tenant, function)
	s.duration, s.hist = h, h.(prometheus.Histogram)
	s.cold = m.cold.WithLabelValues(tenant, function)
	s.throttles = m.throttles.WithLabelValues(tenant, function)
	s.billedMS = m.billedMS.WithLabelValues(tenant, function)
	s.gbs = m.gbSeconds.WithLabelValues(tenant, function)
	s.retries = m.retries.WithLabelValues(tenant, function)
	s.dead = m.deadLetters.WithLabelValues(tenant, function)
	m.fns.Store(k, s)
	if function != OtherFunction {
		m.series.Add(1)
	}
	return s
}

// Forget removes the series of a deleted function, freeing room under the cap.
func (m *Metrics) Forget(tenant, function string) {
	m.newMu.Lock()
	defer m.newMu.Unlock()
	if _, ok := m.fns.LoadAndDelete(fnKey{tenant, function}); !ok {
		return
	}
	if function != OtherFunction {
		m.series.Add(-1)
	}
	l := prometheus.Labels{"tenant": tenant, "function": function}
	for _, v := range []*prometheus.MetricVec{m.invocations.MetricVec, m.duration.MetricVec, m.cold.MetricVec,
		m.throttles.MetricVec, m.billedMS.MetricVec, m.gbSeconds.MetricVec, m.retries.MetricVec, m.deadLetters.MetricVec} {
		v.DeletePartialMatch(l)
	}
}
