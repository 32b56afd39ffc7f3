package metering

import (
	"context"
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
