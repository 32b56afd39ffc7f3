package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// storedKey is a tenant's signing key at rest. The private half is sealed
// with AES-256-GCM under Config.KeyEncryptionKey (tenant and kid as
// additional data) when one is configured; the bucket is never exposed to
// apps either way.
type storedKey struct {
	Kid     string    `json:"kid"`
	Alg     string    `json:"alg"`
	Created time.Time `json:"created"`
	Public  []byte    `json:"public"`
	// Sealed is nonce||ciphertext of the 32-byte Ed25519 seed.
	Sealed []byte `json:"sealed,omitempty"`
	// Seed is the plain Ed25519 seed when no encryption key is configured.
	Seed []byte `json:"seed,omitempty"`
}

type storedKeySet struct {
	Keys []storedKey `json:"keys"`
}

// keySet is a tenant's signing keys in memory.
type keySet struct {
	signKid string
	sign    ed25519.PrivateKey
	pub     map[string]ed25519.PublicKey
	jwks    []byte // the JWKS document, ready to serve
	loaded  time.Time
}

// keyCache holds each tenant's key set, loaded once from KV.
type keyCache struct {
	mu sync.Mutex
	m  sync.Map // tenant -> *keySet
	// miss remembers tenants found without keys, so tokens presented for
	// them do not each cost a KV read (tenant -> time.Time).
	miss sync.Map
}

// missTTL is how long "this tenant has no keys" is believed.
const missTTL = time.Second

func signingKeyKey(tenant string) string { return "sk." + tenant }

func keyAD(tenant, kid string) []byte {
	return []byte("nimbus/auth-signing-key/v1\x00" + tenant + "\x00" + kid)
}

func (s *Service) seal(tenant, kid string, seed []byte) ([]byte, error) {
	blk, err := aes.NewCipher(s.cfg.KeyEncryptionKey)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, seed, keyAD(tenant, kid)), nil
}

func (s *Service) unseal(tenant, kid string, sealed []byte) ([]byte, error) {
	blk, err := aes.NewCipher(s.cfg.KeyEncryptionKey)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, errors.New("sealed signing key too short")
	}
	return g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], keyAD(tenant, kid))
}

// keys returns tenant's key set. With create, a tenant without keys gets
// one (first sign-up, or a JWKS request); without, it is an error.
func (s *Service) keys(ctx context.Context, tenant string, create bool) (*keySet, error) {
	if v, ok := s.kc.m.Load(tenant); ok {
		return v.(*keySet), nil
	}
	s.kc.mu.Lock()
	defer s.kc.mu.Unlock()
	if v, ok := s.kc.m.Load(tenant); ok {
		return v.(*keySet), nil
	}
	if !create {
		if t, ok := s.kc.miss.Load(tenant); ok && time.Since(t.(time.Time)) < missTTL {
			return nil, fmt.Errorf("tenant %q: %w", tenant, errNoKeys)
		}
	}
	ks, err := s.loadKeys(ctx, tenant, create)
	if errors.Is(err, errNoKeys) {
		s.kc.miss.Store(tenant, time.Now())
	}
	if err != nil {
		return nil, err
	}
	s.kc.miss.Delete(tenant)
	s.kc.m.Store(tenant, ks)
	return ks, nil
}

// reloadKeys re-reads a tenant's keys (a kid this node has not seen, as after
// a rotation elsewhere), at most once per 5 s per tenant.
func (s *Service) reloadKeys(ctx context.Context, tenant string) (*keySet, error) {
	s.kc.mu.Lock()
	defer s.kc.mu.Unlock()
	if v, ok := s.kc.m.Load(tenant); ok && time.Since(v.(*keySet).loaded) < 5*time.Second {
		return v.(*keySet), nil
	}
	ks, err := s.loadKeys(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	s.kc.m.Store(tenant, ks)
	return ks, nil
}

var errNoKeys = errors.New("tenant has no signing keys yet")

func (s *Service) loadKeys(ctx context.Context, tenant string, create bool) (*keySet, error) {
	for {
		e, err := s.kv.Get(ctx, signingKeyKey(tenant))
		if err == nil {
			var set storedKeySet
			if err := json.Unmarshal(e.Value(), &set); err != nil {
				return nil, fmt.Errorf("signing keys of tenant %q: %w", tenant, err)
			}
			return s.buildKeySet(tenant, set)
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("signing keys of tenant %q: %w", tenant, err)
		}
		if !create {
			return nil, fmt.Errorf("tenant %q: %w", tenant, errNoKeys)
		}
		sk, err := s.newStoredKey(tenant)
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(storedKeySet{Keys: []storedKey{sk}})
		if _, err := s.kv.Create(ctx, signingKeyKey(tenant), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("storing signing key of tenant %q: %w", tenant, err)
		}
		// Created, or another node won the race: read what is stored.
	}
}

func (s *Service) newStoredKey(tenant string) (storedKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return storedKey{}, err
	}
	var kb [8]byte
	_, _ = rand.Read(kb[:])
	sk := storedKey{Kid: hex.EncodeToString(kb[:]), Alg: "EdDSA", Created: time.Now().UTC(), Public: pub}
	if s.cfg.KeyEncryptionKey != nil {
		if sk.Sealed, err = s.seal(tenant, sk.Kid, priv.Seed()); err != nil {
			return storedKey{}, fmt.Errorf("sealing signing key: %w", err)
		}
	} else {
		sk.Seed = priv.Seed()
	}
	return sk, nil
}

// JWK is one public key as published in the JWKS (RFC 8037 OKP).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

func (s *Service) buildKeySet(tenant string, set storedKeySet) (*keySet, error) {
	ks := &keySet{pub: map[string]ed25519.PublicKey{}, loaded: time.Now()}
	var jwks struct {
		Keys []JWK `json:"keys"`
	}
	jwks.Keys = []JWK{}
	var newest time.Time
	for _, k := range set.Keys {
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing key %s of tenant %q: bad public key", k.Kid, tenant)
		}
		ks.pub[k.Kid] = ed25519.PublicKey(k.Public)
		jwks.Keys = append(jwks.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public), Kid: k.Kid, Alg: "EdDSA", Use: "sig"})
		if ks.sign != nil && !k.Created.After(newest) {
			continue
		}
		seed := k.Seed
		if len(k.Sealed) > 0 {
			if s.cfg.KeyEncryptionKey == nil {
				return nil, fmt.Errorf("signing key %s of tenant %q is sealed, but no key encryption key is configured", k.Kid, tenant)
			}
			var err error
			if seed, err = s.unseal(tenant, k.Kid, k.Sealed); err != nil {
				return nil, fmt.Errorf("signing key %s of tenant %q cannot be unsealed (wrong key encryption key?): %w", k.Kid, tenant, err)
			}
		}
		if len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %s of tenant %q: bad private key", k.Kid, tenant)
		}
		ks.sign, ks.signKid, newest = ed25519.NewKeyFromSeed(seed), k.Kid, k.Created
	}
	if ks.sign == nil {
		return nil, fmt.Errorf("tenant %q: %w", tenant, errNoKeys)
	}
	ks.jwks, _ = json.Marshal(jwks)
	return ks, nil
}

// reservedClaims cannot be set as custom claims.
var reservedClaims = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true, "email": true}

func issuer(tenant string) string { return "nimbus/" + tenant }

// signAccess makes an access token for u.
func (s *Service) signAccess(ctx context.Context, tenant string, u *userRecord, now time.Time, ttl time.Duration) (string, error) {
	ks, err := s.keys(ctx, tenant, true)
	if err != nil {
		return "", err
	}
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	claims := jwt.MapClaims{}
	for k, v := range u.Claims {
		if !reservedClaims[k] {
			claims[k] = v
		}
	}
	claims["iss"] = issuer(tenant)
	claims["sub"] = u.ID
	claims["aud"] = tenant
	claims["email"] = u.Email
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(ttl).Unix()
	claims["jti"] = hex.EncodeToString(jti[:])
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = ks.signKid
	return t.SignedString(ks.sign)
}

// User is a verified end user, as the gateway hands it to functions. Claims
// holds every claim of the token; treat it as read-only (it may be shared).
type User struct {
	ID     string         `json:"id"`
	Email  string         `json:"email"`
	Claims map[string]any `json:"claims"`
}

// ErrInvalidToken is any refused access or refresh token: tampered, expired,
// revoked, or issued for another tenant.
var ErrInvalidToken = errors.New("token is invalid, expired or revoked")

// Verify checks an access token (with or without its "Bearer " prefix) for
// tenant: signature by one of the tenant's keys, EdDSA only, issuer,
// audience, expiry. It reads no KV once the tenant's keys are cached.
func (s *Service) Verify(ctx context.Context, tenant, bearer string) (*User, error) {
	raw := bearer
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	if raw == "" {
		return nil, fmt.Errorf("no token: %w", ErrInvalidToken)
	}
	if v, ok := s.verified.Load(raw); ok {
		c := v.(*verifiedToken)
		if c.tenant == tenant && time.Now().Before(c.exp) {
			u := *c.u
			return &u, nil
		}
	}
	ks, err := s.keys(ctx, tenant, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if k, ok := ks.pub[kid]; ok {
			return k, nil
		}
		fresh, err := s.reloadKeys(ctx, tenant)
		if err != nil {
			return nil, err
		}
		if k, ok := fresh.pub[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown key id %q", kid)
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(issuer(tenant)),
		jwt.WithAudience(tenant),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	sub, _ := claims["sub"].(string)
	email, _ := claims["email"].(string)
	if sub == "" {
		return nil, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	u := &User{ID: sub, Email: email, Claims: claims}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && s.verifiedN.Load() < maxVerified {
		if _, loaded := s.verified.Swap(raw, &verifiedToken{tenant: tenant, u: u, exp: exp.Time}); !loaded {
			s.verifiedN.Add(1)
		}
	}
	cp := *u
	return &cp, nil
}

// verifiedToken is an access token whose signature and claims were checked:
// a client presents the same token for up to AccessTTL, and an Ed25519
// verification costs far more than a map lookup. Only expiry is re-checked.
type verifiedToken struct {
	tenant string
	u      *User
	exp    time.Time
}

// maxVerified bounds the verified-token cache; expired entries are swept.
const maxVerified = 50_000

// sweepVerified drops expired tokens from the cache.
func (s *Service) sweepVerified(now time.Time) {
	s.verified.Range(func(k, v any) bool {
		if !now.Before(v.(*verifiedToken).exp) {
			s.verified.Delete(k)
			s.verifiedN.Add(-1)
		}
		return true
	})
}

// forgetTenantTokens drops a tenant's cached tokens (its pool was deleted).
func (s *Service) forgetTenantTokens(tenant string) {
	s.verified.Range(func(k, v any) bool {
		if v.(*verifiedToken).tenant == tenant {
			s.verified.Delete(k)
			s.verifiedN.Add(-1)
		}
		return true
	})
}

// JWKS returns the tenant's public keys as a JWK Set document.
func (s *Service) JWKS(ctx context.Context, tenant string) ([]byte, error) {
	ks, err := s.keys(ctx, tenant, true)
	if err != nil {
		return nil, err
	}
	return ks.jwks, nil
}
