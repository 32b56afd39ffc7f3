package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/minio/minio-go/v7"
)

// tamper rewrites "needle" to "NEEDLE" in PUT bodies after the client signed them.
type tamper struct{ next http.RoundTripper }

func (t tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		b = bytes.Replace(b, []byte("needle"), []byte("NEEDLE"), 1)
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	return t.next.RoundTrip(r)
}

func TestTamperedBodiesAreRefused(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	if _, err := e.obj.CreateBucket(ctx, "alpha", "safe"); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("hay ", 50000) + "needle" + strings.Repeat(" hay", 1000)

	// minio-go: signed aws-chunked; a changed chunk breaks its chunk signature.
	mc, err := minio.New(strings.TrimPrefix(e.srv.URL, "http://"), &minio.Options{
		Creds: minioCreds(e.alpha), Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
		Transport: tamper{http.DefaultTransport},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mc.PutObject(ctx, "safe", "chunked", strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
	if minioCode(err) != "SignatureDoesNotMatch" {
		t.Fatalf("tampered chunk: %v", err)
	}

	// aws-sdk-go-v2 over HTTP: signed payload hash.
	c := awss3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: awscreds.NewStaticCredentialsProvider(e.alpha.AccessKeyID, e.alpha.SecretAccessKey, ""),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
		HTTPClient:  &http.Client{Transport: tamper{http.DefaultTransport}},
	}, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(e.srv.URL)
		o.UsePathStyle = true
	})
	_, err = c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("safe"), Key: aws.String("hashed"), Body: strings.NewReader(body)})
	if code := awsCode(err); code != "XAmzContentSHA256Mismatch" && code != "BadDigest" {
		t.Fatalf("tampered signed payload: %v", err)
	}

	// Nothing was stored.
	res, err := e.obj.List(ctx, "alpha", "safe", objectsListAll())
	if err != nil || len(res.Objects) != 0 {
		t.Fatalf("tampered uploads left %d objects (%v)", len(res.Objects), err)
	}
}
