package tenant

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// AdminKeyFile is the name of the admin key file in the data dir.
const AdminKeyFile = "admin.key"

// Bootstrap makes a fresh install usable: it creates the default tenant and,
// on first start, an admin key written to dataDir/admin.key (mode 0600). On
// later starts it keeps that key, registering it again if the store lost it.
// It returns the key file's path.
func (s *Service) Bootstrap(ctx context.Context, dataDir string) (string, error) {
	if err := s.ensureDefault(ctx); err != nil {
		return "", fmt.Errorf("tenant: creating the default tenant: %w", err)
	}
	path := filepath.Join(dataDir, AdminKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		full := strings.TrimSpace(string(b))
		if err := s.registerAdminKey(ctx, full); err != nil {
			return "", fmt.Errorf("tenant: admin key %s: %w", path, err)
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			s.log.Warn("admin key file was readable by others; restricting it to 0600", "path", path)
			if err := os.Chmod(path, 0o600); err != nil {
				return "", fmt.Errorf("tenant: restricting %s: %w", path, err)
			}
		}
		return path, nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", fmt.Errorf("tenant: reading admin key %s: %w", path, err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("tenant: creating data dir %s: %w", dataDir, err)
	}
	full, _, err := newKeyString()
	if err != nil {
		return "", err
	}
	// The file first, then the record: a crash in between leaves a file whose
	// key the next start registers, never a registered key nobody holds.
	if err := writeFileExcl(path, []byte(full+"\n")); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return s.Bootstrap(ctx, dataDir)
		}
		return "", fmt.Errorf("tenant: writing admin key %s: %w", path, err)
	}
	if err := s.registerAdminKey(ctx, full); err != nil {
		return "", fmt.Errorf("tenant: admin key %s: %w", path, err)
	}
	s.log.Info("created the admin key", "path", path)
	return path, nil
}

// registerAdminKey makes sure full is a registered admin key of the default
// tenant. A revoked admin key stays revoked (the operator meant it).
func (s *Service) registerAdminKey(ctx context.Context, full string) error {
	id, err := parseKeyString(full)
	if err != nil {
		return fmt.Errorf("not a Nimbus API key (remove the file to have a new one made): %w", err)
	}
	h := sha256.Sum256([]byte(full))
	e, err := s.kv.Get(ctx, "k."+id)
	if err == nil {
		var k APIKey
		if err := json.Unmarshal(e.Value(), &k); err != nil {
			return fmt.Errorf("reading key %s: %w", id, err)
		}
		stored, _ := hex.DecodeString(k.Hash)
		if subtle.ConstantTimeCompare(stored, h[:]) != 1 {
			return fmt.Errorf("key %s is registered with a different secret (was the file edited?)", id)
		}
		if k.Revoked {
			s.log.Warn("the admin key in the data dir is revoked", "key", id)
		}
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("reading key %s: %w", id, err)
	}
	k := APIKey{ID: id, Tenant: DefaultTenant, Name: "admin (bootstrap)", Scopes: []string{ScopeAdmin},
		Created: time.Now().UTC(), Hash: hex.EncodeToString(h[:])}
	b, _ := json.Marshal(k)
	rev, err := s.kv.Create(ctx, "k."+id, b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return s.registerAdminKey(ctx, full)
		}
		return fmt.Errorf("registering key %s: %w", id, err)
	}
	ke, err := newKeyEntry(k, rev)
	if err != nil {
		return err
	}
	s.putKey(ke, true)
	return nil
}
