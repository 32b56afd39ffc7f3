package metering

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// BenchmarkPublisherRecord is the per-invocation cost of handing a record to
// the usage publisher (draining onto a real embedded JetStream meanwhile).
func BenchmarkPublisherRecord(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bb, err := bus.Open(ctx, bus.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	p := NewPublisher(PublisherConfig{Bus: bb, Buffer: 1 << 16})
	if err := p.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Stop(ctx) }()
	rec := Record{ID: "inv", Tenant: "acme", Function: "hello", Version: 1, Trigger: "http", Start: time.Now(),
		DurationNS: 1_300_000, MemoryMB: 128, Outcome: "ok", Status: 200}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Record(&rec)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(p.Stats().Dropped)/float64(b.N), "dropped/op")
}

// BenchmarkMeteringCPU is what metering costs the whole process (publisher,
// embedded JetStream and meter together) per invocation: records are fed at
// a steady 4,000/s, as a busy node would, and the process's CPU time (user +
// system, from getrusage) until the meter applied them all is divided by
// their count. "feed" is the same loop handing records to nothing, the
// floor to subtract. Reports cpu-µs/record.
func BenchmarkMeteringCPU(b *testing.B) {
	b.Run("feed", func(b *testing.B) { meteringCPU(b, false) })
	b.Run("metering", func(b *testing.B) { meteringCPU(b, true) })
}

func meteringCPU(b *testing.B, metering bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bb, err := bus.Open(ctx, bus.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	p := NewPublisher(PublisherConfig{Bus: bb, Node: "node-1"})
	m := NewMeter(MeterConfig{Bus: bb})
	if metering {
		if err := p.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = p.Stop(ctx) }()
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = m.Stop(ctx) }()
	}
	const perMS = 4
	n := max(b.N, 4000)
	start := time.Now()
	before := cpuTime()
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var sink Record
	for i := 0; i < n; {
		<-tick.C
		for j := 0; j < perMS && i < n; j, i = j+1, i+1 {
			rec := Record{ID: fmt.Sprintf("inv-%d", i), Tenant: "acme", Function: "hello", Version: 1, Trigger: "http",
				Start: time.Now(), DurationNS: 1_300_000, MemoryMB: 128, Outcome: "ok", Status: 200}
			if metering {
				p.Record(&rec)
			} else {
				sink = rec
			}
		}
	}
	_ = sink
	for metering && m.Stats().Applied < uint64(n) {
		if ctx.Err() != nil {
			b.Fatalf("applied %d of %d", m.Stats().Applied, n)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-before)/float64(time.Microsecond)/float64(n), "cpu-µs/record")
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
