package async

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Run: go test ./internal/async -run '^$' -bench . -benchtime 5000x
//
// Both sub-benchmarks move b.N messages with 16 publishing goroutines on an
// embedded JetStream in a temp dir: "raw-jetstream" publishes to a work-queue
// stream with acknowledgement and consumes with a pull consumer and ack;
// "nimbus-async" enqueues (what a 202 costs: status + publish with ack) and
// runs a no-op function through the worker (status running/succeeded + ack).
// "latency" measures, one invocation at a time, from Enqueue returning (the
// 202) to the function starting.

const benchPublishers = 16

func BenchmarkAsync(b *testing.B) {
	b.Run("raw-jetstream", benchRaw)
	b.Run("nimbus-async", benchAsync)
	b.Run("latency", benchLatency)
}

func spread(n int, f func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range benchPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func benchRaw(b *testing.B) {
	bs := openBus(b, b.TempDir())
	ctx := context.Background()
	st, err := bs.Stream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"hello":"world"}`)
	var done atomic.Int64
	all := make(chan struct{})
	n := int64(b.N)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if done.Add(1) == n {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	b.ResetTimer()
	start := time.Now()
	spread(b.N, func(i int) {
		if _, err := bs.JS.Publish(ctx, "raw.default.f", payload); err != nil {
			b.Error(err)
		}
	})
	accepted := time.Since(start)
	<-all
	completed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/completed.Seconds(), "completed/s")
}

func benchAsync(b *testing.B) {
	bs := openBus(b, b.TempDir())
	inv := newInvoker()
	var done atomic.Int64
	all := make(chan struct{})
	n := int64(b.N)
	inv.add("noop", registry.Config{Runtime: "process", Scale: registry.Scale{Max: 16}}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		if done.Add(1) == n {
			close(all)
		}
		return nil
	})
	s := startService(b, bs, inv, nil)
	ctx := context.Background()
	t := Target{Tenant: "default", Function: "noop"}
	payload := []byte(`{"hello":"world"}`)
	b.ResetTimer()
	start := time.Now()
	spread(b.N, func(i int) {
		if _, err := s.Enqueue(ctx, t, &runtime.Request{Body: bytesReader(payload)}); err != nil {
			b.Error(err)
		}
	})
	accepted := time.Since(start)
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d completed", done.Load(), b.N)
	}
	completed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/completed.Seconds(), "completed/s")
}

func benchLatency(b *testing.B) {
	bs := openBus(b, b.TempDir())
	inv := newInvoker()
	started := make(chan time.Time, 1)
	inv.add("noop", registry.Config{Runtime: "process"}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		started <- time.Now()
		return nil
	})
	s := startService(b, bs, inv, nil)
	ctx := context.Background()
	t := Target{Tenant: "default", Function: "noop"}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if _, err := s.Enqueue(ctx, t, &runtime.Request{}); err != nil {
			b.Fatal(err)
		}
		accepted := time.Now()
		st := <-started
		lat = append(lat, max(0, st.Sub(accepted)))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
