package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// family is a chain of refresh tokens from one log-in. Only the newest
// token's hash is kept: presenting any other token of the family is reuse
// (or forgery by someone who saw one), and revokes the whole family.
type family struct {
	User    string    `json:"user"`
	Hash    string    `json:"hash"`
	Gen     int       `json:"gen"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Revoked bool      `json:"revoked,omitempty"`
}

// refresh tokens are "{family id}.{secret}": 32 hex digits, 43 base64url.
func newRefreshSecret() (string, string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	sec := base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(sec))
	return sec, hex.EncodeToString(h[:])
}

func parseRefresh(tok string) (id, secret string, ok bool) {
	id, secret, ok = strings.Cut(strings.TrimSpace(tok), ".")
	if !ok || len(id) != 32 || len(secret) != 43 {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// issue creates a new refresh family and an access token for u.
func (s *Service) issue(ctx context.Context, tenant string, u *userRecord, now time.Time) (*Tokens, error) {
	sec, h := newRefreshSecret()
	id := randomHex(16)
	f := family{User: u.ID, Hash: h, Gen: 1, Created: now, Updated: now}
	b, _ := json.Marshal(f)
	if _, err := s.tokens.Create(ctx, familyKey(tenant, id), b); err != nil {
		return nil, fmt.Errorf("storing a session for tenant %q: %w", tenant, err)
	}
	return s.tokensFor(ctx, tenant, u, id+"."+sec, now)
}

func (s *Service) tokensFor(ctx context.Context, tenant string, u *userRecord, refresh string, now time.Time) (*Tokens, error) {
	at, err := s.signAccess(ctx, tenant, u, now, s.cfg.AccessTTL)
	if err != nil {
		return nil, fmt.Errorf("signing an access token for tenant %q: %w", tenant, err)
	}
	t := &Tokens{AccessToken: at, TokenType: "Bearer", ExpiresIn: int(s.cfg.AccessTTL / time.Second), RefreshToken: refresh}
	t.User.ID, t.User.Email = u.ID, u.Email
	return t, nil
}

// Refresh trades a refresh token for a new one and a new access token. The
// old token stops working; using it again revokes the family.
func (s *Service) Refresh(ctx context.Context, tenant, token string) (*Tokens, error) {
	if err := s.checkTenant(tenant); err != nil {
		return nil, err
	}
	id, sec, ok := parseRefresh(token)
	if !ok {
		return nil, fmt.Errorf("malformed refresh token: %w", ErrInvalidToken)
	}
	e, err := s.tokens.Get(ctx, familyKey(tenant, id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("unknown refresh token: %w", ErrInvalidToken)
		}
		return nil, fmt.Errorf("reading a session of tenant %q: %w", tenant, err)
	}
	var f family
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return nil, fmt.Errorf("reading a session of tenant %q: %w", tenant, err)
	}
	now := time.Now().UTC()
	if f.Revoked {
		return nil, fmt.Errorf("revoked session: %w", ErrInvalidToken)
	}
	if now.Sub(f.Updated) > s.cfg.RefreshTTL {
		return nil, fmt.Errorf("expired session: %w", ErrInvalidToken)
	}
	h := sha256.Sum256([]byte(sec))
	want, _ := hex.DecodeString(f.Hash)
	if subtle.ConstantTimeCompare(h[:], want) != 1 {
		s.revokeFamily(ctx, tenant, id)
		s.log.Warn("refresh token reused; session revoked", "tenant", tenant, "user", f.User)
		return nil, fmt.Errorf("reused refresh token: %w", ErrInvalidToken)
	}
	u, _, err := s.user(ctx, tenant, f.User)
	if err != nil {
		if errors.Is(err, ErrUserNotFound) {
			s.revokeFamily(ctx, tenant, id)
			return nil, fmt.Errorf("user gone: %w", ErrInvalidToken)
		}
		return nil, err
	}
	if f.Created.Before(u.TokensValidAfter) {
		s.revokeFamily(ctx, tenant, id)
		return nil, fmt.Errorf("session older than the password: %w", ErrInvalidToken)
	}
	newSec, newHash := newRefreshSecret()
	f.Hash, f.Gen, f.Updated = newHash, f.Gen+1, now
	b, _ := json.Marshal(f)
	if _, err := s.tokens.Update(ctx, familyKey(tenant, id), b, e.Revision()); err != nil {
		// Another refresh with this same token won the race: this one is a reuse.
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.revokeFamily(ctx, tenant, id)
			return nil, fmt.Errorf("refresh token used twice at once: %w", ErrInvalidToken)
		}
		return nil, fmt.Errorf("rotating a session of tenant %q: %w", tenant, err)
	}
	return s.tokensFor(ctx, tenant, u, id+"."+newSec, now)
}

// revokeFamily marks a family revoked (retrying on concurrent updates).
func (s *Service) revokeFamily(ctx context.Context, tenant, id string) {
	for range 5 {
		e, err := s.tokens.Get(ctx, familyKey(tenant, id))
		if err != nil {
			return
		}
		var f family
		if json.Unmarshal(e.Value(), &f) != nil || f.Revoked {
			return
		}
		f.Revoked, f.Updated = true, time.Now().UTC()
		b, _ := json.Marshal(f)
		if _, err := s.tokens.Update(ctx, familyKey(tenant, id), b, e.Revision()); err == nil {
			return
		}
	}
	s.log.Error("could not revoke a session", "tenant", tenant, "family", id)
}

// LogOut revokes the refresh token's whole family.
func (s *Service) LogOut(ctx context.Context, tenant, token string) error {
	if err := s.checkTenant(tenant); err != nil {
		return err
	}
	id, _, ok := parseRefresh(token)
	if !ok {
		return fmt.Errorf("malformed refresh token: %w", ErrInvalidToken)
	}
	if _, err := s.tokens.Get(ctx, familyKey(tenant, id)); err != nil {
		return fmt.Errorf("unknown refresh token: %w", ErrInvalidToken)
	}
	// Any token of the family logs it out, even an old one: the family ends either way.
	s.revokeFamily(ctx, tenant, id)
	return nil
}
