package s3

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// CredentialsBucket holds S3 access keys. SigV4 needs the secret itself (it is
// an HMAC key), so secrets are stored recoverably: this KV bucket is private
// to the server — no API lists or reads it except GET /api/v1/objects-credentials,
// which returns only the caller's own tenant's key.
const CredentialsBucket = "nimbus_s3_credentials"

// ErrUnknownAccessKey is what a CredentialStore answers for an access key it
// does not know.
var ErrUnknownAccessKey = errors.New("unknown access key")

// CredentialStore finds the tenant and secret of an access key.
type CredentialStore interface {
	Lookup(ctx context.Context, accessKeyID string) (tenant, secret string, err error)
}

// Credentials is an S3 access key pair.
type Credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// KVCredentials is the CredentialStore on JetStream KV. Keys:
// key.{AKID} → {tenant, secret, created}; tenant.{tenant} → the tenant's
// standing access key id.
type KVCredentials struct {
	kv jetstream.KeyValue
}

var _ CredentialStore = (*KVCredentials)(nil)

type storedKey struct {
	Tenant  string    `json:"tenant"`
	Secret  string    `json:"secret"`
	Created time.Time `json:"created"`
}

// NewKVCredentials opens (creating if needed) the credentials bucket.
func NewKVCredentials(ctx context.Context, b *bus.Bus) (*KVCredentials, error) {
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: CredentialsBucket, Description: "Nimbus S3 access keys (private)"})
	if err != nil {
		return nil, fmt.Errorf("s3 credentials: %w", err)
	}
	return &KVCredentials{kv: kv}, nil
}

func validAccessKey(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Lookup implements CredentialStore.
func (c *KVCredentials) Lookup(ctx context.Context, accessKeyID string) (string, string, error) {
	if !validAccessKey(accessKeyID) {
		return "", "", ErrUnknownAccessKey
	}
	e, err := c.kv.Get(ctx, "key."+accessKeyID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", "", ErrUnknownAccessKey
	}
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials: %w", err)
	}
	var k storedKey
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return "", "", fmt.Errorf("s3 credentials: access key record: %w", err)
	}
	return k.Tenant, k.Secret, nil
}

// Issue creates a new access key pair for tenant (in addition to any others).
func (c *KVCredentials) Issue(ctx context.Context, tenant string) (Credentials, error) {
	if !registry.ValidName(tenant) {
		return Credentials{}, fmt.Errorf("s3 credentials: tenant name %q is invalid", tenant)
	}
	id := make([]byte, 10)
	sec := make([]byte, 30)
	_, _ = rand.Read(id)
	_, _ = rand.Read(sec)
	cr := Credentials{
		AccessKeyID:     "NIMB" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(id),
		SecretAccessKey: base64.RawStdEncoding.EncodeToString(sec),
	}
	data, _ := json.Marshal(storedKey{Tenant: tenant, Secret: cr.SecretAccessKey, Created: time.Now().UTC()})
	if _, err := c.kv.Create(ctx, "key."+cr.AccessKeyID, data); err != nil {
		return Credentials{}, fmt.Errorf("s3 credentials: store access key: %w", err)
	}
	return cr, nil
}

// ForTenant returns tenant's standing access key, creating it on first use
// (and again after it was revoked). Concurrent first calls settle on one key.
func (c *KVCredentials) ForTenant(ctx context.Context, tenant string) (Credentials, error) {
	if !registry.ValidName(tenant) {
		return Credentials{}, fmt.Errorf("s3 credentials: tenant name %q is invalid", tenant)
	}
	tk := "tenant." + tenant
	for range 5 {
		var rev uint64
		e, err := c.kv.Get(ctx, tk)
		switch {
		case err == nil:
			id := string(e.Value())
			t, secret, err := c.Lookup(ctx, id)
			if err == nil && t == tenant {
				return Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
			}
			if err != nil && !errors.Is(err, ErrUnknownAccessKey) {
				return Credentials{}, err
			}
			rev = e.Revision() // revoked: replace it
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return Credentials{}, fmt.Errorf("s3 credentials: %w", err)
		}
		cr, err := c.Issue(ctx, tenant)
		if err != nil {
			return Credentials{}, err
		}
		if rev == 0 {
			_, err = c.kv.Create(ctx, tk, []byte(cr.AccessKeyID))
		} else {
			_, err = c.kv.Update(ctx, tk, []byte(cr.AccessKeyID), rev)
		}
		if err == nil {
			return cr, nil
		}
		// Another caller won the race: drop ours and read theirs.
		_ = c.kv.Purge(ctx, "key."+cr.AccessKeyID)
	}
	return Credentials{}, fmt.Errorf("s3 credentials: could not settle the access key of tenant %q", tenant)
}

// Revoke deletes an access key.
func (c *KVCredentials) Revoke(ctx context.Context, accessKeyID string) error {
	if !validAccessKey(accessKeyID) {
		return ErrUnknownAccessKey
	}
	if err := c.kv.Purge(ctx, "key."+accessKeyID); err != nil {
		return fmt.Errorf("s3 credentials: revoke: %w", err)
	}
	return nil
}
