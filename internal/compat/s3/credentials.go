package s3

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
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
// an HMAC key), so secrets are stored recoverably: sealed with AES-GCM under
// the server's key encryption key when one is given (the server always gives
// one, derived from its secrets key), in a KV bucket private to the server —
// no API lists or reads it except GET /api/v1/objects-credentials, which
// returns only the caller's own tenant's key.
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
	kv   jetstream.KeyValue
	aead cipher.AEAD // nil: secrets stored in the clear
}

var _ CredentialStore = (*KVCredentials)(nil)

type storedKey struct {
	Tenant string `json:"tenant"`
	// Secret is the secret in the clear (a store without a key encryption
	// key); Sealed is nonce||AES-GCM(secret) bound to the key id and tenant.
	Secret  string    `json:"secret,omitempty"`
	Sealed  []byte    `json:"sealed,omitempty"`
	Created time.Time `json:"created"`
}

// NewKVCredentials opens (creating if needed) the credentials bucket. kek, 32
// bytes, seals the secrets at rest; nil stores them in the clear.
func NewKVCredentials(ctx context.Context, b *bus.Bus, kek []byte) (*KVCredentials, error) {
	c := &KVCredentials{}
	if kek != nil {
		blk, err := aes.NewCipher(kek)
		if err != nil {
			return nil, fmt.Errorf("s3 credentials: key encryption key: %w", err)
		}
		if c.aead, err = cipher.NewGCM(blk); err != nil {
			return nil, fmt.Errorf("s3 credentials: key encryption key: %w", err)
		}
	}
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: CredentialsBucket, Description: "Nimbus S3 access keys (private)"})
	if err != nil {
		return nil, fmt.Errorf("s3 credentials: %w", err)
	}
	c.kv = kv
	return c, nil
}

// keyAD binds a sealed secret to its access key and tenant, so a record
// copied under another key or tenant does not open.
func keyAD(accessKeyID, tenant string) []byte {
	return []byte("nimbus-s3/" + accessKeyID + "/" + tenant)
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
	if len(k.Sealed) == 0 {
		return k.Tenant, k.Secret, nil
	}
	if c.aead == nil || len(k.Sealed) < c.aead.NonceSize() {
		return "", "", fmt.Errorf("s3 credentials: access key %s is sealed and this server has no key to open it", accessKeyID)
	}
	n := c.aead.NonceSize()
	sec, err := c.aead.Open(nil, k.Sealed[:n], k.Sealed[n:], keyAD(accessKeyID, k.Tenant))
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials: access key %s does not open with this server's key (was the data dir's secrets key replaced?)", accessKeyID)
	}
	return k.Tenant, string(sec), nil
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
	sk := storedKey{Tenant: tenant, Created: time.Now().UTC()}
	if c.aead != nil {
		nonce := make([]byte, c.aead.NonceSize())
		_, _ = rand.Read(nonce)
		sk.Sealed = c.aead.Seal(nonce, nonce, []byte(cr.SecretAccessKey), keyAD(cr.AccessKeyID, tenant))
	} else {
		sk.Secret = cr.SecretAccessKey
	}
	data, _ := json.Marshal(sk)
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
