package hostapi_test

import (
	"context"
	"testing"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// BenchmarkKVGet compares a KV read through the host API (tenant scoping,
// name checks, error mapping) with the same read on the raw JetStream KV
// bucket underneath, in the same run.
func BenchmarkKVGet(b *testing.B) {
	e := newEnvB(b)
	h := e.f.For(version("alpha", registry.Config{}))
	ctx := context.Background()
	if _, err := h.KVPut(ctx, "bench", "k", []byte(`{"v":1}`)); err != nil {
		b.Fatal(err)
	}
	b.Run("hostapi", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.KVGet(ctx, "bench", "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jetstream", func(b *testing.B) {
		kv, err := e.bus.JS.KeyValue(ctx, "kv_alpha_bench")
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := kv.Get(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
