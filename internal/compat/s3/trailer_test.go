package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/minio/minio-go/v7"

	nimbuss3 "github.com/nimbusfn/nimbus/internal/compat/s3"
)

// TestChecksumTrailers covers the aws-chunked forms with trailing checksums:
// aws-sdk-go-v2 over TLS sends STREAMING-UNSIGNED-PAYLOAD-TRAILER, minio-go
// with a checksum sends signed chunks with a signed trailer.
func TestChecksumTrailers(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	var seen []string
	tls := httptest.NewUnstartedServer(nil)
	tls.Config.Handler = recordPayload(e.s3, &seen)
	tls.StartTLS()
	defer tls.Close()
	c := awss3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: awscreds.NewStaticCredentialsProvider(e.alpha.AccessKeyID, e.alpha.SecretAccessKey, ""),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
		HTTPClient:  tls.Client(),
	}, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(tls.URL)
		o.UsePathStyle = true
	})
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("sums")}); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []types.ChecksumAlgorithm{types.ChecksumAlgorithmCrc32, types.ChecksumAlgorithmCrc32c, types.ChecksumAlgorithmSha256, types.ChecksumAlgorithmCrc64nvme} {
		body := bytes.Repeat([]byte("trailer "+string(alg)+" "), 20000)
		if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("sums"), Key: aws.String(string(alg)), Body: bytes.NewReader(body), ChecksumAlgorithm: alg}); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		g, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("sums"), Key: aws.String(string(alg))})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(g.Body)
		g.Body.Close()
		if !bytes.Equal(got, body) {
			t.Fatalf("%s: stored %d bytes, want %d (chunk framing must not be stored)", alg, len(got), len(body))
		}
	}
	// An unseekable body takes the same path.
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("sums"), Key: aws.String("stream"), Body: io.NopCloser(strings.NewReader("streamed")), ContentLength: aws.Int64(8)}); err != nil {
		t.Fatal(err)
	}

	mc, err := minio.New(strings.TrimPrefix(e.srv.URL, "http://"), &minio.Options{
		Creds: minioCreds(e.alpha), Region: "us-east-1", BucketLookup: minio.BucketLookupPath, TrailingHeaders: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = recordPayload(e.s3, &seen)
	body := bytes.Repeat([]byte("minio trailer "), 30000)
	if _, err := mc.PutObject(ctx, "sums", "minio", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{Checksum: minio.ChecksumCRC32C}); err != nil {
		t.Fatal(err)
	}
	o, _ := mc.GetObject(ctx, "sums", "minio", minio.GetObjectOptions{})
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("minio trailer object: %d bytes, %v", len(got), err)
	}
	modes := strings.Join(seen, ",")
	for _, want := range []string{"STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"} {
		if !strings.Contains(modes, want) {
			t.Errorf("no request used %s (saw %s)", want, modes)
		}
	}
}

func minioCreds(c nimbuss3.Credentials) *miniocredsT { return miniocredsNew(c) }
