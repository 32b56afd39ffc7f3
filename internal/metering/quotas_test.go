package metering

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

func wantQuotaErr(t *testing.T, err error, code apierr.Code, contains string) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want an *apierr.Error %s", err, code.Name)
	}
	if ae.Code != code {
		t.Fatalf("code %v, want %v (%s)", ae.Code, code, ae.Message)
	}
	if contains != "" && !strings.Contains(ae.Message, contains) {
		t.Fatalf("message %q does not name %q", ae.Message, contains)
	}
	if code.Status == http.StatusTooManyRequests {
		ra, err := strconv.Atoi(ae.Header.Get("Retry-After"))
		if err != nil || ra < 1 {
			t.Fatalf("Retry-After %q", ae.Header.Get("Retry-After"))
		}
	}
}

func TestQuotaConcurrency(t *testing.T) {
	limits := map[string]Limits{"acme": {MaxConcurrency: 2}}
	var mu sync.Mutex
	q := NewQuotas(func(t string) Limits { mu.Lock(); defer mu.Unlock(); return limits[t] })
	r1, err := q.Admit("acme")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := q.Admit("acme")
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Admit("acme")
	wantQuotaErr(t, err, apierr.QuotaExceeded, "concurrency quota of 2")
	if _, err := q.Admit("other"); err != nil { // another tenant is not affected
		t.Fatal(err)
	}
	r1()
	r3, err := q.Admit("acme")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// Lowering the limit below what runs: running ones keep going, new ones wait.
	mu.Lock()
	limits["acme"] = Limits{MaxConcurrency: 1}
	mu.Unlock()
	if q.InFlight("acme") != 2 {
		t.Fatalf("in flight %d", q.InFlight("acme"))
	}
	_, err = q.Admit("acme")
	wantQuotaErr(t, err, apierr.QuotaExceeded, "concurrency")
	r2()
	r3()
	if q.InFlight("acme") != 0 {
		t.Fatalf("in flight %d after releases", q.InFlight("acme"))
	}

	// Hammer: never more than the limit at once.
	mu.Lock()
	limits["acme"] = Limits{MaxConcurrency: 3}
	mu.Unlock()
	var wg sync.WaitGroup
	var peakMu sync.Mutex
	peak := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				rel, err := q.Admit("acme")
				if err != nil {
					continue
				}
				n := q.InFlight("acme")
				peakMu.Lock()
				peak = max(peak, n)
				peakMu.Unlock()
				rel()
			}
		}()
	}
	wg.Wait()
	if peak > 3 || q.InFlight("acme") != 0 {
		t.Fatalf("peak %d, left %d", peak, q.InFlight("acme"))
	}
}

func TestQuotaRPS(t *testing.T) {
	q := NewQuotas(func(string) Limits { return Limits{MaxRPS: 2} })
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	q.now = func() time.Time { return now }
	for i := range 2 {
		rel, err := q.Admit("acme")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		rel()
	}
	_, err := q.Admit("acme")
	wantQuotaErr(t, err, apierr.QuotaExceeded, "2 invocations per second")
	if q.InFlight("acme") != 0 {
		t.Fatal("a refused call holds a concurrency slot")
	}
	now = now.Add(500 * time.Millisecond) // one token back
	rel, err := q.Admit("acme")
	if err != nil {
		t.Fatalf("after 0.5s: %v", err)
	}
	rel()
	_, err = q.Admit("acme")
	wantQuotaErr(t, err, apierr.QuotaExceeded, "per second")
	now = now.Add(time.Hour) // the bucket holds at most one second's worth
	for i := range 3 {
		rel, err := q.Admit("acme")
		if i < 2 && err != nil {
			t.Fatalf("after an hour, call %d: %v", i, err)
		}
		if i == 2 {
			wantQuotaErr(t, err, apierr.QuotaExceeded, "per second")
		} else {
			rel()
		}
	}
}

type fixedUsage map[string]float64

func (f fixedUsage) MonthlyGBSeconds(t string) float64 { return f[t] }

func TestQuotaMonthlyGBSecondsAndFunctions(t *testing.T) {
	q := NewQuotas(func(string) Limits { return Limits{MonthlyGBSeconds: 10, MaxFunctions: 3, MaxStorageBytes: 100} })
	rel, err := q.Admit("acme") // no meter yet: not enforced
	if err != nil {
		t.Fatal(err)
	}
	rel()
	q.UseMeter(fixedUsage{"acme": 10.5, "beta": 9.9})
	_, err = q.Admit("acme")
	wantQuotaErr(t, err, apierr.QuotaExceeded, "10 GB-seconds this month")
	if rel, err := q.Admit("beta"); err != nil {
		t.Fatal(err)
	} else {
		rel()
	}
	if err := q.CheckFunctions("acme", 2); err != nil {
		t.Fatal(err)
	}
	wantQuotaErr(t, q.CheckFunctions("acme", 3), apierr.QuotaFunctions, "quota is 3")
	if err := q.CheckStorage("acme", 50, 50); err != nil {
		t.Fatal(err)
	}
	wantQuotaErr(t, q.CheckStorage("acme", 50, 51), apierr.QuotaStorage, "storage quota of 100")
}

// TestQuotaMonthlyFromMeter: usage metered from real records refuses calls
// once the month's GB-seconds pass the quota.
func TestQuotaMonthlyFromMeter(t *testing.T) {
	env := newMeterEnv(t)
	q := NewQuotas(func(string) Limits { return Limits{MonthlyGBSeconds: 1} })
	q.UseMeter(env.m)
	rel, err := q.Admit("acme")
	if err != nil {
		t.Fatal(err)
	}
	rel()
	// 2 s at 512 MB = 1 GB-s.
	env.pub.Record(&Record{ID: "big", Tenant: "acme", Function: "f", Outcome: "ok", DurationNS: 2e9, MemoryMB: 512, Start: time.Now()})
	eventually(t, 20*time.Second, func() error {
		_, err := q.Admit("acme")
		if err == nil {
			return fmt.Errorf("still admitted with %v GB-s used", env.m.MonthlyGBSeconds("acme"))
		}
		wantQuotaErr(t, err, apierr.QuotaExceeded, "GB-seconds")
		return nil
	})
}

func BenchmarkAdmit(b *testing.B) {
	q := NewQuotas(func(string) Limits { return Limits{MaxConcurrency: 1000, MaxRPS: 1e12} })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rel, err := q.Admit("acme")
			if err != nil {
				b.Fatal(err)
			}
			rel()
		}
	})
}
