package metering

import (
	"math"
	"testing"
)

func TestBilledMSAndGBSeconds(t *testing.T) {
	cases := []struct {
		rec  Record
		want int64
	}{
		{Record{Outcome: "ok", DurationNS: 1}, 1},
		{Record{Outcome: "ok", DurationNS: 999_999}, 1},
		{Record{Outcome: "ok", DurationNS: 1_000_000}, 1},
		{Record{Outcome: "ok", DurationNS: 1_000_001}, 2},
		{Record{Outcome: "timeout", DurationNS: 30_000_000_000}, 30000},
		{Record{Outcome: "error", DurationNS: 2_500_000}, 3},
		{Record{Outcome: "ok", DurationNS: 0}, 0},                   // never ran
		{Record{Outcome: "throttled", DurationNS: 5_000_000}, 0},    // refused
		{Record{Outcome: "start_failed", DurationNS: 7_000_000}, 0}, // no instance
	}
	for _, c := range cases {
		if got := BilledMS(&c.rec); got != c.want {
			t.Errorf("BilledMS(%s, %d ns) = %d, want %d", c.rec.Outcome, c.rec.DurationNS, got, c.want)
		}
	}
	if got := GBSeconds(1000, 1024); got != 1 {
		t.Errorf("1000 ms at 1024 MB = %v GB-s, want 1", got)
	}
	if got := GBSeconds(3, 128); math.Abs(got-0.000375) > 1e-15 {
		t.Errorf("3 ms at 128 MB = %v GB-s, want 0.000375", got)
	}
	p := NewMeter(MeterConfig{}).Prices()
	if p != DefaultPrices || p.PerMillionRequests != 0.20 || p.PerGBSecond != 0.0000166667 {
		t.Errorf("default prices %+v", p)
	}
	// A price of 0 is taken as given, not as "the default": that part is free.
	free := Prices{PerMillionRequests: 0, PerGBSecond: 0.5}
	if got := NewMeter(MeterConfig{Prices: &free}).Prices(); got != free {
		t.Errorf("prices %+v, want %+v", got, free)
	}
	if got := free.Cost(3e6, 2); got != 1 {
		t.Errorf("3M requests free + 2 GB-s at $0.5 = %v, want 1", got)
	}
	if err := free.Check(); err != nil {
		t.Errorf("free requests refused: %v", err)
	}
	for _, bad := range []Prices{{PerMillionRequests: -0.2}, {PerGBSecond: math.NaN()}, {PerGBSecond: math.Inf(1)}} {
		if bad.Check() == nil {
			t.Errorf("prices %+v accepted", bad)
		}
	}
	// One million 1 s invocations at 1024 MB: $0.20 + 1e6 GB-s × $0.0000166667.
	if got := p.Cost(1e6, 1e6); math.Abs(got-16.8667) > 1e-9 {
		t.Errorf("cost = %v, want 16.8667", got)
	}
}
