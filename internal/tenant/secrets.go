package tenant

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxSecretSize is the largest secret value, in bytes.
const MaxSecretSize = 64 << 10

// Secret errors.
var (
	ErrSecretNotFound  = errors.New("secret not found")
	ErrSecretTooLarge  = fmt.Errorf("secret value is larger than %d bytes", MaxSecretSize)
	ErrSecretName      = errors.New("invalid secret name: use 1-128 letters, digits and '_', starting with a letter or '_' (it becomes an environment variable)")
	ErrSecretUndecrypt = errors.New("secret cannot be decrypted (wrong secrets key, or the record was moved or altered)")
)

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// ValidSecretName reports whether name can name a secret.
func ValidSecretName(name string) bool { return secretNameRE.MatchString(name) }

// SecretInfo is what may be shown about a secret: never its value.
type SecretInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// secretRecord is a secret at rest: AES-256-GCM with a random 96-bit nonce
// per write and "tenant, name" as additional data, so a record copied under
// another tenant's or name's key fails to open.
type secretRecord struct {
	Name       string    `json:"name"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
}

type secretCipher struct{ aead cipher.AEAD }

func newSecretCipher(key []byte) (secretCipher, error) {
	if len(key) != 32 {
		return secretCipher{}, fmt.Errorf("secrets key must be 32 bytes, got %d", len(key))
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return secretCipher{}, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return secretCipher{}, err
	}
	return secretCipher{aead: aead}, nil
}

func secretAD(tenant, name string) []byte {
	return []byte("nimbus/secret/v1\x00" + tenant + "\x00" + name)
}

func (c secretCipher) seal(tenant, name string, value []byte) (nonce, ct []byte, err error) {
	nonce = make([]byte, c.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, c.aead.Seal(nil, nonce, value, secretAD(tenant, name)), nil
}

func (c secretCipher) open(tenant, name string, nonce, ct []byte) ([]byte, error) {
	if len(nonce) != c.aead.NonceSize() {
		return nil, ErrSecretUndecrypt
	}
	pt, err := c.aead.Open(nil, nonce, ct, secretAD(tenant, name))
	if err != nil {
		return nil, ErrSecretUndecrypt
	}
	return pt, nil
}

// ParseSecretsKey reads a 32-byte secrets key written as 64 hex digits or
// as standard/URL base64 (for configuration files and flags).
func ParseSecretsKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("secrets key must be 32 bytes written as 64 hex digits or base64")
}

// loadOrCreateSecretsKey reads dir/secrets.key, creating it (32 random
// bytes, mode 0600) when missing.
func loadOrCreateSecretsKey(dir string) ([]byte, error) {
	p := filepath.Join(dir, "secrets.key")
	b, err := os.ReadFile(p)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("secrets key %s holds %d bytes, want 32 (restore it from backup: without it no secret can be read)", p, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading secrets key %s: %w", p, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir %s: %w", dir, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := writeFileExcl(p, key); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race
			return loadOrCreateSecretsKey(dir)
		}
		return nil, fmt.Errorf("writing secrets key %s: %w", p, err)
	}
	return key, nil
}

// writeFileExcl writes data to a new file with mode 0600, failing when path
// exists. It writes a temporary file and links it into place, so a crash
// never leaves a half-written key under path.
func writeFileExcl(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}

// Vault is a tenant-scoped view of the secrets operations.
type Vault struct{ s *Service }

// Secrets returns the secret store.
func (s *Service) Secrets() *Vault { return &Vault{s: s} }

func secretKey(tenant, name string) string { return "s." + tenant + "." + name }

func (v *Vault) check(tenant, name string) error {
	if !v.s.Exists(tenant) {
		return fmt.Errorf("tenant %q: %w", tenant, ErrTenantNotFound)
	}
	if !ValidSecretName(name) {
		return fmt.Errorf("secret %q: %w", name, ErrSecretName)
	}
	return nil
}

// Set stores (or replaces) a secret, encrypted.
func (v *Vault) Set(ctx context.Context, tenant, name, value string) (SecretInfo, error) {
	if err := v.check(tenant, name); err != nil {
		return SecretInfo{}, err
	}
	if len(value) > MaxSecretSize {
		return SecretInfo{}, fmt.Errorf("secret %q is %d bytes: %w", name, len(value), ErrSecretTooLarge)
	}
	now := time.Now().UTC()
	rec := secretRecord{Name: name, Created: now, Updated: now}
	if e, err := v.s.kv.Get(ctx, secretKey(tenant, name)); err == nil {
		var old secretRecord
		if json.Unmarshal(e.Value(), &old) == nil && !old.Created.IsZero() {
			rec.Created = old.Created
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return SecretInfo{}, fmt.Errorf("reading secret %q of tenant %q: %w", name, tenant, err)
	}
	var err error
	if rec.Nonce, rec.Ciphertext, err = v.s.aead.seal(tenant, name, []byte(value)); err != nil {
		return SecretInfo{}, fmt.Errorf("encrypting secret %q: %w", name, err)
	}
	b, _ := json.Marshal(rec)
	if _, err := v.s.kv.Put(ctx, secretKey(tenant, name), b); err != nil {
		return SecretInfo{}, fmt.Errorf("storing secret %q of tenant %q: %w", name, tenant, err)
	}
	return SecretInfo{Name: name, Created: rec.Created, Updated: rec.Updated}, nil
}

// List returns a tenant's secret names and timestamps, sorted by name.
func (v *Vault) List(ctx context.Context, tenant string) ([]SecretInfo, error) {
	if !v.s.Exists(tenant) {
		return nil, fmt.Errorf("tenant %q: %w", tenant, ErrTenantNotFound)
	}
	w, err := v.s.kv.Watch(ctx, "s."+tenant+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing secrets of tenant %q: %w", tenant, err)
	}
	defer w.Stop()
	out := []SecretInfo{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing secrets of tenant %q: watch closed", tenant)
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
				return out, nil
			}
			var rec secretRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				continue
			}
			out = append(out, SecretInfo{Name: rec.Name, Created: rec.Created, Updated: rec.Updated})
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Delete removes a secret.
func (v *Vault) Delete(ctx context.Context, tenant, name string) error {
	if err := v.check(tenant, name); err != nil {
		return err
	}
	if _, err := v.s.kv.Get(ctx, secretKey(tenant, name)); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("secret %q: %w", name, ErrSecretNotFound)
		}
		return fmt.Errorf("reading secret %q of tenant %q: %w", name, tenant, err)
	}
	if err := v.s.kv.Purge(ctx, secretKey(tenant, name)); err != nil {
		return fmt.Errorf("deleting secret %q of tenant %q: %w", name, tenant, err)
	}
	return nil
}

// Resolve decrypts the named secrets of tenant, for the runtime to deliver
// to an instance. A missing name is an error that says which.
func (v *Vault) Resolve(ctx context.Context, tenant string, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, name := range names {
		if !ValidSecretName(name) {
			return nil, fmt.Errorf("secret %q: %w", name, ErrSecretName)
		}
		e, err := v.s.kv.Get(ctx, secretKey(tenant, name))
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil, fmt.Errorf("secret %q of tenant %q: %w", name, tenant, ErrSecretNotFound)
			}
			return nil, fmt.Errorf("reading secret %q of tenant %q: %w", name, tenant, err)
		}
		var rec secretRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("secret %q of tenant %q: %w", name, tenant, ErrSecretUndecrypt)
		}
		pt, err := v.s.aead.open(tenant, name, rec.Nonce, rec.Ciphertext)
		if err != nil {
			return nil, fmt.Errorf("secret %q of tenant %q: %w", name, tenant, err)
		}
		out[name] = string(pt)
	}
	return out, nil
}

// secretKeys lists the KV keys of a tenant's secrets.
func (s *Service) secretKeys(ctx context.Context, tenant string) ([]string, error) {
	l, err := s.kv.ListKeysFiltered(ctx, "s."+tenant+".>")
	if err != nil {
		return nil, fmt.Errorf("listing secrets of tenant %q: %w", tenant, err)
	}
	defer l.Stop()
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// DeriveKey derives a 32-byte key for another at-rest purpose (such as
// sealing end-user auth signing keys) from the secrets key with HKDF-SHA256,
// so the data dir holds one key file. Valid after Start.
func (s *Service) DeriveKey(purpose string) ([]byte, error) {
	if s.rawKey == nil {
		return nil, errors.New("tenant: DeriveKey before Start")
	}
	return hkdf.Key(sha256.New, s.rawKey, nil, "nimbus/"+purpose, 32)
}
