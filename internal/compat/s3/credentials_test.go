package s3_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/nimbusfn/nimbus/internal/bus"
	nimbuss3 "github.com/nimbusfn/nimbus/internal/compat/s3"
)

// testKEK seals the S3 secrets of the tests' credential stores.
var testKEK = bytes.Repeat([]byte{7}, 32)

// TestCredentialsSealedAtRest: the stored record never holds the secret in
// the clear, the right key opens it, and another key does not.
func TestCredentialsSealedAtRest(t *testing.T) {
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := nimbuss3.NewKVCredentials(ctx, b, testKEK)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := c.ForTenant(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := b.JS.KeyValue(ctx, nimbuss3.CredentialsBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "key."+cr.AccessKeyID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Value(), []byte(cr.SecretAccessKey)) {
		t.Fatalf("stored record holds the secret in the clear: %s", e.Value())
	}
	tenant, secret, err := c.Lookup(ctx, cr.AccessKeyID)
	if err != nil || tenant != "alpha" || secret != cr.SecretAccessKey {
		t.Fatalf("Lookup = %q %q %v", tenant, secret, err)
	}
	other, err := nimbuss3.NewKVCredentials(ctx, b, bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, s, err := other.Lookup(ctx, cr.AccessKeyID); err == nil {
		t.Fatalf("another key opened the secret: %q", s)
	}
	// A record moved to another access key id does not open either.
	if _, err := kv.Put(ctx, "key.NIMBCOPY", e.Value()); err != nil {
		t.Fatal(err)
	}
	if _, s, err := c.Lookup(ctx, "NIMBCOPY"); err == nil {
		t.Fatalf("a copied record opened under another id: %q", s)
	}
}
