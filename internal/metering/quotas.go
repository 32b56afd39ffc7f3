package metering

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// Limits are one tenant's quotas. Zero means unlimited.
type Limits struct {
	MaxConcurrency   int     `json:"max_concurrency,omitempty"`
	MaxRPS           float64 `json:"max_rps,omitempty"`
	MonthlyGBSeconds float64 `json:"monthly_gb_seconds,omitempty"`
	MaxFunctions     int     `json:"max_functions,omitempty"`
	MaxStorageBytes  int64   `json:"max_storage_bytes,omitempty"`
}

// MonthlyUsage reports a tenant's GB-seconds in the current month (the Meter).
type MonthlyUsage interface {
	MonthlyGBSeconds(tenant string) float64
}

// Quotas enforces Limits at the moment of the call. Admit costs a few atomic
// operations on the tenant's own state (and, with an rps limit, a lock that
// only that tenant's calls share); limitsOf is called on every Admit and must
// answer from memory. A lowered limit applies to the next call: running
// invocations are never cut.
type Quotas struct {
	limitsOf func(tenant string) Limits
	usage    atomic.Pointer[MonthlyUsage]
	tenants  sync.Map // tenant → *tenantQuota
	now      func() time.Time
}

type tenantQuota struct {
	inFlight atomic.Int64
	release  func()

	mu     sync.Mutex // token bucket
	tokens float64
	last   time.Time
}

// NewQuotas builds quotas over limitsOf.
func NewQuotas(limitsOf func(tenant string) Limits) *Quotas {
	return &Quotas{limitsOf: limitsOf, now: time.Now}
}

// UseMeter sets where monthly GB-seconds come from (usually the Meter).
func (q *Quotas) UseMeter(u MonthlyUsage) {
	if u == nil {
		q.usage.Store(nil)
		return
	}
	q.usage.Store(&u)
}

func (q *Quotas) tenant(t string) *tenantQuota {
	if v, ok := q.tenants.Load(t); ok {
		return v.(*tenantQuota)
	}
	tq := &tenantQuota{}
	tq.release = func() { tq.inFlight.Add(-1) }
	v, _ := q.tenants.LoadOrStore(t, tq)
	return v.(*tenantQuota)
}

// InFlight is how many of tenant's invocations hold an admission now (for
// reporting a quota change that is below what is running).
func (q *Quotas) InFlight(tenant string) int {
	if v, ok := q.tenants.Load(tenant); ok {
		return int(v.(*tenantQuota).inFlight.Load())
	}
	return 0
}

// Admit lets one invocation of tenant in, or refuses it with a
// quota_exceeded (429) error that names the quota and carries Retry-After.
// Call release exactly once when the invocation ends.
func (q *Quotas) Admit(tenant string) (release func(), err error) {
	lim := q.limitsOf(tenant)
	tq := q.tenant(tenant)
	if lim.MonthlyGBSeconds > 0 {
		if u := q.usage.Load(); u != nil {
			if used := (*u).MonthlyGBSeconds(tenant); used >= lim.MonthlyGBSeconds {
				now := q.now().UTC()
				next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
				return nil, quotaErr(int(math.Ceil(next.Sub(now).Seconds())),
					"tenant %q used %.1f of its %g GB-seconds this month; more is allowed from %s or with a higher quota",
					tenant, used, lim.MonthlyGBSeconds, next.Format("2006-01-02"))
			}
		}
	}
	if lim.MaxConcurrency > 0 {
		// Compare and swap rather than add and undo: a refused call never
		// shows in the count, so it never reads above the quota.
		for {
			n := tq.inFlight.Load()
			if n >= int64(lim.MaxConcurrency) {
				return nil, quotaErr(1, "tenant %q is at its concurrency quota of %d executions at once; retry when one finishes",
					tenant, lim.MaxConcurrency)
			}
			if tq.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		tq.inFlight.Add(1)
	}
	if lim.MaxRPS > 0 {
		if wait, ok := tq.take(lim.MaxRPS, q.now()); !ok {
			tq.inFlight.Add(-1)
			return nil, quotaErr(int(math.Ceil(wait.Seconds())), "tenant %q is at its quota of %g invocations per second",
				tenant, lim.MaxRPS)
		}
	}
	return tq.release, nil
}

// take removes one token from a bucket of capacity max(1, rps) refilled at
// rps per second, or says how long until one is there.
func (tq *tenantQuota) take(rps float64, now time.Time) (time.Duration, bool) {
	capacity := math.Max(1, rps)
	tq.mu.Lock()
	defer tq.mu.Unlock()
	if tq.last.IsZero() {
		tq.tokens, tq.last = capacity, now
	} else if el := now.Sub(tq.last); el > 0 {
		tq.tokens = math.Min(capacity, tq.tokens+el.Seconds()*rps)
		tq.last = now
	}
	if tq.tokens >= 1 {
		tq.tokens--
		return 0, true
	}
	return time.Duration((1 - tq.tokens) / rps * float64(time.Second)), false
}

func quotaErr(retryAfter int, format string, args ...any) *apierr.Error {
	e := apierr.New(apierr.QuotaExceeded, format, args...)
	e.Header = http.Header{"Retry-After": {strconv.Itoa(max(1, retryAfter))}}
	return e
}

// CheckFunctions refuses (403 quota_functions) creating one more function
// when tenant already has current functions.
func (q *Quotas) CheckFunctions(tenant string, current int) error {
	lim := q.limitsOf(tenant)
	if lim.MaxFunctions > 0 && current >= lim.MaxFunctions {
		return apierr.New(apierr.QuotaFunctions, "tenant %q has %d functions, its quota is %d: delete one or raise the quota",
			tenant, current, lim.MaxFunctions)
	}
	return nil
}

// CheckStorage refuses (403 quota_storage) storing adding more bytes when
// tenant already stores current bytes.
func (q *Quotas) CheckStorage(tenant string, current, adding int64) error {
	lim := q.limitsOf(tenant)
	if lim.MaxStorageBytes > 0 && current+adding > lim.MaxStorageBytes {
		return apierr.New(apierr.QuotaStorage, "tenant %q stores %d bytes; %d more would pass its storage quota of %d bytes",
			tenant, current, adding, lim.MaxStorageBytes)
	}
	return nil
}
