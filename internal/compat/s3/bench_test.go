package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"
)

// S3 PUT/GET through minio-go against Nimbus's S3 API, beside the same through
// the JetStream object store directly, in one process.
//
//	go test -run XXX -bench . -benchtime 2s ./internal/compat/s3/

func BenchmarkS3(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	mc := e.minio(b, e.alpha)
	if err := mc.MakeBucket(ctx, "bench", minio.MakeBucketOptions{}); err != nil {
		b.Fatal(err)
	}
	raw, err := e.bus.ObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "raw_baseline"})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 8 << 20} {
		data := randBytes(size)
		name := fmt.Sprintf("%dKB", size>>10)
		b.Run("put/"+name+"/raw-objectstore", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := raw.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("put/"+name+"/s3-minio", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := mc.PutObject(ctx, "bench", name, bytes.NewReader(data), int64(size), minio.PutObjectOptions{DisableMultipart: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("get/"+name+"/raw-objectstore", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				r, err := raw.Get(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				if n, _ := io.Copy(io.Discard, r); n != int64(size) {
					b.Fatalf("read %d", n)
				}
				r.Close()
			}
		})
		b.Run("get/"+name+"/s3-minio", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				o, err := mc.GetObject(ctx, "bench", name, minio.GetObjectOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if n, _ := io.Copy(io.Discard, o); n != int64(size) {
					b.Fatalf("read %d", n)
				}
				o.Close()
			}
		})
	}
}
