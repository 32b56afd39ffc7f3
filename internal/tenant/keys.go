package tenant

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scopes an API key may carry.
const (
	// ScopeAdmin allows everything, across tenants.
	ScopeAdmin = "admin"
	// ScopeDeploy allows creating, changing and deleting functions, triggers
	// and secrets of the key's tenant (and implies ScopeRead).
	ScopeDeploy = "deploy"
	// ScopeInvoke allows invoking the tenant's functions.
	ScopeInvoke = "invoke"
	// ScopeRead allows reading the tenant's functions, logs and usage.
	ScopeRead = "read"
)

// AllScopes lists the valid scopes.
var AllScopes = []string{ScopeAdmin, ScopeDeploy, ScopeInvoke, ScopeRead}

// Why an API key was refused. Over HTTP all of them are the same 401, so a
// caller cannot tell a revoked key from a never-issued one; logs can.
var (
	ErrMalformedKey = errors.New("malformed API key")
	ErrUnknownKey   = errors.New("unknown API key")
	ErrRevokedKey   = errors.New("revoked API key")
	ErrExpiredKey   = errors.New("expired API key")
	ErrKeyNotFound  = errors.New("API key not found")
)

// Key format: nmb_<id>_<secret>, id = 16 hex digits (8 random bytes, the
// lookup handle), secret = 52 base32 characters (32 random bytes).
const (
	keyPrefix    = KeyPrefix
	keyIDLen     = 16
	keySecretLen = 52
	keyLen       = len(keyPrefix) + keyIDLen + 1 + keySecretLen
)

var keySecretEnc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// APIKey is a key as stored and listed. The key itself is shown once, when
// it is created; only its hash is kept.
type APIKey struct {
	ID      string     `json:"id"`
	Tenant  string     `json:"tenant"`
	Name    string     `json:"name,omitempty"`
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Revoked bool       `json:"revoked,omitempty"`
	// RevokedAt is when the key was revoked.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Hash is the hex SHA-256 of the whole key string. A plain (fast) hash
	// is enough because keys are 256-bit random secrets: there is no
	// dictionary to try, so a slow password hash would only cost CPU on every
	// request without making a stolen hash any easier to reverse. Empty in
	// listings.
	Hash string `json:"hash,omitempty"`
}

// keyEntry is the in-memory form of a key, ready for the hot path.
type keyEntry struct {
	k       APIKey
	hash    [sha256.Size]byte
	expires time.Time // zero: never
	rev     uint64
	deleted bool
	// p is the principal this key authenticates as (handed out as copies).
	p Principal
}

func decodeKey(b []byte, rev uint64) (*keyEntry, error) {
	var k APIKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, err
	}
	return newKeyEntry(k, rev)
}

func newKeyEntry(k APIKey, rev uint64) (*keyEntry, error) {
	h, err := hex.DecodeString(k.Hash)
	if err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("key %s: bad hash", k.ID)
	}
	ke := &keyEntry{k: k, rev: rev}
	copy(ke.hash[:], h)
	if k.Expires != nil {
		ke.expires = *k.Expires
	}
	ke.p = Principal{Tenant: k.Tenant, KeyTenant: k.Tenant, KeyID: k.ID, Scopes: k.Scopes}
	for _, sc := range k.Scopes {
		ke.p.mask |= scopeGrants(sc)
	}
	return ke, nil
}

func (s *Service) putKey(ke *keyEntry, local bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.keys.Load()
	if cur, ok := old[ke.k.ID]; ok && cur.rev >= ke.rev && !(local && cur.rev == localDelete) {
		return
	}
	m := make(map[string]*keyEntry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[ke.k.ID] = ke
	s.keys.Store(&m)
}

func (s *Service) dropKey(id string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.keys.Load()
	if cur, ok := old[id]; ok && cur.rev > rev && cur.rev != localDelete {
		return
	}
	m := make(map[string]*keyEntry, len(old))
	for k, v := range old {
		m[k] = v
	}
	m[id] = &keyEntry{k: APIKey{ID: id}, rev: rev, deleted: true}
	s.keys.Store(&m)
}

// Principal is who a request acts as: the key's tenant and scopes, or the
// tenant an admin key chose with ?tenant= / X-Nimbus-Tenant.
type Principal struct {
	// Tenant is the tenant the request acts on.
	Tenant string `json:"tenant"`
	// KeyTenant is the tenant that owns the key.
	KeyTenant string   `json:"key_tenant"`
	KeyID     string   `json:"key_id"`
	Scopes    []string `json:"scopes"`
	mask      uint8
}

// Scope bits: what a principal holds (grants) and what a check needs.
const (
	bitAdmin uint8 = 1 << iota
	bitDeploy
	bitInvoke
	bitRead
)

// scopeBit is the bit a scope is checked against (0 for an unknown scope).
func scopeBit(s string) uint8 {
	switch s {
	case ScopeAdmin:
		return bitAdmin
	case ScopeDeploy:
		return bitDeploy
	case ScopeInvoke:
		return bitInvoke
	case ScopeRead:
		return bitRead
	}
	return 0
}

// scopeGrants is what holding a scope grants: deploy implies read.
func scopeGrants(s string) uint8 {
	if s == ScopeDeploy {
		return bitDeploy | bitRead
	}
	return scopeBit(s)
}

// Can reports whether the principal holds scope; admin holds every scope.
func (p *Principal) Can(scope string) bool {
	if p == nil {
		return false
	}
	if p.mask&bitAdmin != 0 {
		return true
	}
	b := scopeBit(scope)
	return b != 0 && p.mask&b != 0
}

// IsAdmin reports whether the principal holds the admin scope.
func (p *Principal) IsAdmin() bool { return p != nil && p.mask&bitAdmin != 0 }

// maxVerified bounds the cache of already-verified bearer strings.
const maxVerified = 10000

// Authenticate checks a bearer API key against the in-memory key table (no
// bus access) and returns its principal. The error wraps one of
// ErrMalformedKey, ErrUnknownKey, ErrRevokedKey or ErrExpiredKey.
func (s *Service) Authenticate(ctx context.Context, bearer string) (*Principal, error) {
	ke, err := s.check(bearer)
	if err != nil {
		return nil, err
	}
	p := ke.p // a copy: Middleware sets the tenant an admin acts on
	return &p, nil
}

// KeyPrincipal is Authenticate without the copy: it returns the key's own
// principal, which every request with the key shares, so it must only be
// read. Nothing is allocated, which matters on the data plane (a check per
// request with a key).
func (s *Service) KeyPrincipal(ctx context.Context, bearer string) (*Principal, error) {
	ke, err := s.check(bearer)
	if err != nil {
		return nil, err
	}
	return &ke.p, nil
}

// check returns the entry of a valid (known, unrevoked, unexpired) key.
func (s *Service) check(bearer string) (*keyEntry, error) {
	keys := *s.keys.Load()
	// A bearer already verified against the current version of its key needs
	// no hashing: only its revocation and expiry are checked again.
	if v, ok := s.verified.Load(bearer); ok {
		ke := v.(*keyEntry)
		if cur, ok := keys[ke.k.ID]; ok && cur == ke {
			return ke.valid(time.Now())
		}
	}
	if len(bearer) != keyLen || !strings.HasPrefix(bearer, keyPrefix) || bearer[len(keyPrefix)+keyIDLen] != '_' {
		return nil, ErrMalformedKey
	}
	id := bearer[len(keyPrefix) : len(keyPrefix)+keyIDLen]
	ke, ok := keys[id]
	if !ok || ke.deleted {
		return nil, fmt.Errorf("key %s: %w", id, ErrUnknownKey)
	}
	h := sha256.Sum256([]byte(bearer))
	if subtle.ConstantTimeCompare(h[:], ke.hash[:]) != 1 {
		return nil, fmt.Errorf("key %s: secret does not match: %w", id, ErrUnknownKey)
	}
	if s.verifiedSize.Load() < maxVerified {
		if _, loaded := s.verified.Swap(bearer, ke); !loaded {
			s.verifiedSize.Add(1)
		}
	}
	return ke.valid(time.Now())
}

// valid returns ke unless it is revoked or expired at now.
func (ke *keyEntry) valid(now time.Time) (*keyEntry, error) {
	if ke.k.Revoked {
		return nil, fmt.Errorf("key %s: %w", ke.k.ID, ErrRevokedKey)
	}
	if !ke.expires.IsZero() && !now.Before(ke.expires) {
		return nil, fmt.Errorf("key %s: %w", ke.k.ID, ErrExpiredKey)
	}
	return ke, nil
}

// KeyRequest describes a key to create.
type KeyRequest struct {
	Tenant string
	Scopes []string
	// ExpiresIn is the key's lifetime; 0 means it does not expire.
	ExpiresIn time.Duration
	Name      string
}

// CreateKey issues a key. The returned string is the only time the key is
// ever visible; the store keeps its hash.
func (s *Service) CreateKey(ctx context.Context, r KeyRequest) (string, APIKey, error) {
	if !s.Exists(r.Tenant) {
		return "", APIKey{}, fmt.Errorf("tenant %q: %w", r.Tenant, ErrTenantNotFound)
	}
	scopes, err := normalizeScopes(r.Scopes)
	if err != nil {
		return "", APIKey{}, err
	}
	if r.ExpiresIn < 0 {
		return "", APIKey{}, invalid("expires_in must not be negative (0 means the key does not expire)")
	}
	if len(r.Name) > 128 {
		return "", APIKey{}, invalid("key name is longer than 128 characters")
	}
	for range 3 {
		full, id, err := newKeyString()
		if err != nil {
			return "", APIKey{}, err
		}
		k := APIKey{ID: id, Tenant: r.Tenant, Name: r.Name, Scopes: scopes, Created: time.Now().UTC()}
		if r.ExpiresIn > 0 {
			exp := k.Created.Add(r.ExpiresIn)
			k.Expires = &exp
		}
		h := sha256.Sum256([]byte(full))
		k.Hash = hex.EncodeToString(h[:])
		b, _ := json.Marshal(k)
		rev, err := s.kv.Create(ctx, "k."+id, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // a 64-bit id collision: draw again
		}
		if err != nil {
			return "", APIKey{}, fmt.Errorf("storing API key for tenant %q: %w", r.Tenant, err)
		}
		ke, _ := newKeyEntry(k, rev)
		s.putKey(ke, true)
		k.Hash = ""
		return full, k, nil
	}
	return "", APIKey{}, errors.New("could not draw a free key id")
}

func newKeyString() (full, id string, err error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("random key: %w", err)
	}
	id = hex.EncodeToString(b[:8])
	return keyPrefix + id + "_" + keySecretEnc.EncodeToString(b[8:]), id, nil
}

// parseKeyString checks the shape of a key and returns its id.
func parseKeyString(full string) (string, error) {
	if len(full) != keyLen || !strings.HasPrefix(full, keyPrefix) || full[len(keyPrefix)+keyIDLen] != '_' {
		return "", ErrMalformedKey
	}
	id := full[len(keyPrefix) : len(keyPrefix)+keyIDLen]
	if _, err := hex.DecodeString(id); err != nil {
		return "", ErrMalformedKey
	}
	if _, err := keySecretEnc.DecodeString(full[len(keyPrefix)+keyIDLen+1:]); err != nil {
		return "", ErrMalformedKey
	}
	return id, nil
}

func normalizeScopes(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, invalid("a key needs at least one scope: %s", strings.Join(AllScopes, ", "))
	}
	out := make([]string, 0, len(in))
	for _, sc := range in {
		sc = strings.TrimSpace(sc)
		if scopeBit(sc) == 0 {
			return nil, invalid("unknown scope %q: use %s", sc, strings.Join(AllScopes, ", "))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RevokeKey marks a key revoked; it stops authenticating on every node
// within the KV watch latency (at once on this node).
func (s *Service) RevokeKey(ctx context.Context, id string) (APIKey, error) {
	e, err := s.kv.Get(ctx, "k."+id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return APIKey{}, fmt.Errorf("key %q: %w", id, ErrKeyNotFound)
		}
		return APIKey{}, fmt.Errorf("reading key %q: %w", id, err)
	}
	var k APIKey
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return APIKey{}, fmt.Errorf("reading key %q: %w", id, err)
	}
	if !k.Revoked {
		now := time.Now().UTC()
		k.Revoked, k.RevokedAt = true, &now
		b, _ := json.Marshal(k)
		rev, err := s.kv.Update(ctx, "k."+id, b, e.Revision())
		if err != nil {
			return APIKey{}, fmt.Errorf("revoking key %q: %w", id, err)
		}
		ke, err := newKeyEntry(k, rev)
		if err != nil {
			return APIKey{}, err
		}
		s.putKey(ke, true)
	}
	k.Hash = ""
	return k, nil
}

// Key returns one key (from memory, hash stripped).
func (s *Service) Key(id string) (APIKey, bool) {
	ke, ok := (*s.keys.Load())[id]
	if !ok || ke.deleted {
		return APIKey{}, false
	}
	k := ke.k
	k.Hash = ""
	return k, true
}

// Keys lists the keys of tenant ("" for all tenants), newest first, without
// their hashes.
func (s *Service) Keys(tenant string) []APIKey {
	return s.keysOf(tenant)
}

func (s *Service) keysOf(tenant string) []APIKey {
	m := *s.keys.Load()
	out := []APIKey{}
	for _, ke := range m {
		if ke.deleted || (tenant != "" && ke.k.Tenant != tenant) {
			continue
		}
		k := ke.k
		k.Hash = ""
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// NewPrincipal builds a principal (for in-process callers and tests that
// act without a key, such as loopback admin).
func NewPrincipal(tenant, keyID string, scopes []string) *Principal {
	p := &Principal{Tenant: tenant, KeyTenant: tenant, KeyID: keyID, Scopes: scopes}
	for _, sc := range scopes {
		p.mask |= scopeGrants(sc)
	}
	return p
}
