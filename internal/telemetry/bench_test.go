package telemetry

import (
	"context"
	"fmt"
	"testing"

	"github.com/nimbusfn/nimbus/internal/metering"
)

// BenchmarkObserve is the per-invocation metrics cost on the invoker's hot
// path, from parallel goroutines over 16 functions of 2 tenants.
func BenchmarkObserve(b *testing.B) {
	m := NewMetrics()
	recs := make([]metering.Record, 16)
	for i := range recs {
		recs[i] = metering.Record{Tenant: fmt.Sprintf("t%d", i%2), Function: fmt.Sprintf("f%d", i), Trigger: "http",
			Outcome: "ok", DurationNS: 1_300_000, MemoryMB: 128, Cold: i == 0}
		m.Observe(&recs[i]) // bind the series
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Observe(&recs[i&15])
			i++
		}
	})
}

// BenchmarkLogSink is the cost of one captured line (the buffer is drained
// by the publisher onto a real embedded JetStream).
func BenchmarkLogSink(b *testing.B) {
	bb := openBusB(b)
	l := NewLogs(LogsConfig{Bus: bb, Buffer: 1 << 16})
	if err := l.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Stop(context.Background()) }()
	s := l.Sink("acme", "hello", 1)
	line := []byte("2026-11-25T18:00:00Z INFO handled request path=/hello status=200")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s.Log("inv-1", "stdout", line)
	}
	b.StopTimer()
	b.ReportMetric(float64(l.Stats().Dropped)/float64(b.N), "dropped/op")
}

// BenchmarkStartSpanNoExporter is tracing's cost with no endpoint configured.
func BenchmarkStartSpanNoExporter(b *testing.B) {
	tr := NewTracer(TracingConfig{})
	ctx := context.Background()
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	b.ReportAllocs()
	for range b.N {
		_, s := tr.StartSpan(ctx, "invoke", in)
		s.End(StatusOK)
	}
}
