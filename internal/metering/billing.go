package metering

import (
	"fmt"
	"math"
)

// Outcomes a Record may carry (Record.Outcome). Unknown values are kept as
// they are in usage and mapped to "other" in metric labels.
const (
	OutcomeOK           = "ok"
	OutcomeError        = "error"
	OutcomeCrashed      = "crashed"
	OutcomeTimeout      = "timeout"
	OutcomeOutOfMemory  = "out_of_memory"
	OutcomeBadResponse  = "bad_response"
	OutcomeStartFailed  = "start_failed"
	OutcomeThrottled    = "throttled"
	OutcomeCanceled     = "canceled"
	OutcomeBadCode      = "bad_code"
	OutcomeFunctionErr  = "function_error"
	nanosPerMillisecond = int64(1e6)
)

// BilledMS is what one record is billed for, in whole milliseconds: the time
// inside the instance rounded up to 1 ms (at least 1 ms) when the function ran;
// 0 when it never ran (refused by a quota or the queue, or no instance could
// start). An idle function has no records, so it accrues exactly nothing.
func BilledMS(rec *Record) int64 {
	if !Ran(rec) {
		return 0
	}
	return (rec.DurationNS + nanosPerMillisecond - 1) / nanosPerMillisecond
}

// Ran reports whether rec's function ran in an instance (and so is billed).
func Ran(rec *Record) bool {
	return rec.DurationNS > 0 && rec.Outcome != OutcomeThrottled && rec.Outcome != OutcomeStartFailed
}

// GBSeconds is billed milliseconds × configured memory: ms/1000 × MB/1024.
func GBSeconds(billedMS int64, memoryMB int) float64 {
	return float64(billedMS) / 1000 * float64(memoryMB) / 1024
}

// Prices is the price table that turns usage into cost, in US dollars.
type Prices struct {
	PerMillionRequests float64 `json:"per_million_requests"`
	PerGBSecond        float64 `json:"per_gb_second"`
}

// DefaultPrices are AWS Lambda's public on-demand list prices for x86 in
// us-east-1 (first pricing tier, free tier not applied): $0.20 per million
// requests and $0.0000166667 per GB-second. Configure your own in Prices.
var DefaultPrices = Prices{PerMillionRequests: 0.20, PerGBSecond: 0.0000166667}

// ValidPrice reports whether v is a price: finite and 0 (free) or more.
func ValidPrice(v float64) bool { return v >= 0 && !math.IsInf(v, 0) }

// Check reports a price that is negative, NaN or infinite. A zero price
// is valid: that part of usage is free.
func (p Prices) Check() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"price per million requests", p.PerMillionRequests}, {"price per GB-second", p.PerGBSecond}} {
		if !ValidPrice(f.v) {
			return fmt.Errorf("%s %v: use US dollars, 0 or more (0 makes it free)", f.name, f.v)
		}
	}
	return nil
}

// Cost is the price of billed requests and GB-seconds, rounded to 1e-10 $ so
// that sums in different orders compare equal in reports.
func (p Prices) Cost(billedRequests int64, gbSeconds float64) float64 {
	c := float64(billedRequests)/1e6*p.PerMillionRequests + gbSeconds*p.PerGBSecond
	return math.Round(c*1e10) / 1e10
}
