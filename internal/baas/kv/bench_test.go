package kv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Benchmarks of KV get/put through the Go API (what the host API calls) and
// through REST, beside raw JetStream KV in the same process.
//
//	go test -run XXX -bench . ./internal/baas/kv/

var benchDoc = []byte(`{"user":"ada","done":false,"tags":["a","b"],"n":42}`)

func BenchmarkKV(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	if _, err := e.svc.CreateBucket(ctx, "bench", "docs", BucketOptions{}); err != nil {
		b.Fatal(err)
	}
	raw, err := e.bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "raw_baseline"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := raw.Put(ctx, "k", benchDoc); err != nil {
		b.Fatal(err)
	}
	if _, err := e.svc.Put(ctx, "bench", "docs", "users/k", benchDoc, Condition{}); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{}
	url := e.srv.URL + "/api/v1/kv/docs/users/k"
	rest := func(b *testing.B, method string, body []byte) {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("X-Tenant", "bench")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", method, resp.StatusCode)
		}
	}

	b.Run("get/raw-jetstream", func(b *testing.B) {
		for b.Loop() {
			if _, err := raw.Get(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get/go-api", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.svc.Get(ctx, "bench", "docs", "users/k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get/rest", func(b *testing.B) {
		for b.Loop() {
			rest(b, "GET", nil)
		}
	})
	b.Run("put/raw-jetstream", func(b *testing.B) {
		for b.Loop() {
			if _, err := raw.Put(ctx, "k", benchDoc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("put/go-api", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.svc.Put(ctx, "bench", "docs", "users/k", benchDoc, Condition{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("put/rest", func(b *testing.B) {
		for b.Loop() {
			rest(b, "PUT", benchDoc)
		}
	})
}
