package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// TestS3AndKVThroughTheServer checks the wiring: the S3 API on its own
// listener with credentials issued by the REST API, and KV over REST.
func TestS3AndKVThroughTheServer(t *testing.T) {
	e := testenv.Start(t, func(c *server.Config) { c.S3Listen = "127.0.0.1:0" })
	_, body := e.Get("/api/v1/objects-credentials")
	var cr struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
	}
	if err := json.Unmarshal(body, &cr); err != nil || cr.AccessKeyID == "" {
		t.Fatalf("credentials: %s", body)
	}
	mc, err := minio.New(strings.TrimPrefix(e.S3URL(), "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(cr.AccessKeyID, cr.SecretAccessKey, ""), Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := mc.MakeBucket(ctx, "photos", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("nimbus"), 1000)
	if _, err := mc.PutObject(ctx, "photos", "a/b.txt", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	o, err := mc.GetObject(ctx, "photos", "a/b.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(o)
	if !bytes.Equal(got, data) {
		t.Fatalf("object round trip: %d bytes back", len(got))
	}
	// The same object over the REST API.
	if resp, b := e.Get("/api/v1/objects/photos/a/b.txt"); resp.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Fatalf("REST get: %d", resp.StatusCode)
	}
	// KV over REST.
	if resp, b := e.Do("PUT", "/api/v1/kv/app", []byte(`{}`)); resp.StatusCode >= 300 {
		t.Fatalf("kv bucket: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Do("PUT", "/api/v1/kv/app/user-1", []byte(`{"name":"Ada"}`)); resp.StatusCode != 200 {
		t.Fatalf("kv put: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Get("/api/v1/kv/app/user-1"); resp.StatusCode != 200 || !strings.Contains(string(b), "Ada") {
		t.Fatalf("kv get: %d %s", resp.StatusCode, b)
	}
}
