package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// setPassword stores a new password hash and ends every existing session.
func (s *Service) setPassword(ctx context.Context, tenant string, u *userRecord, rev uint64, password string) (*userRecord, error) {
	hash, err := s.hash.hash(ctx, password)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	nu := *u
	nu.Hash, nu.Updated, nu.TokensValidAfter = hash, now, now
	b, _ := json.Marshal(nu)
	if _, err := s.kv.Update(ctx, userKey(tenant, u.ID), b, rev); err != nil {
		return nil, fmt.Errorf("updating user %q of tenant %q (changed concurrently? retry): %w", u.ID, tenant, err)
	}
	return &nu, nil
}

// ChangePassword checks the old password of the user an access token names,
// sets the new one, ends every other session and returns fresh tokens.
func (s *Service) ChangePassword(ctx context.Context, tenant, bearer, oldPw, newPw, ip string) (*Tokens, error) {
	if err := s.checkTenant(tenant); err != nil {
		return nil, err
	}
	cur, err := s.Verify(ctx, tenant, bearer)
	if err != nil {
		return nil, err
	}
	if err := checkNewPassword(newPw); err != nil {
		return nil, err
	}
	now := time.Now()
	if ok, wait := s.perIP.allow(ip, now); !ok {
		return nil, &RateLimitedError{RetryAfter: wait}
	}
	u, rev, err := s.user(ctx, tenant, cur.ID)
	if err != nil {
		if errors.Is(err, ErrUserNotFound) {
			return nil, fmt.Errorf("user gone: %w", ErrInvalidToken)
		}
		return nil, err
	}
	lk := lockKey(tenant, u.Email)
	if locked, wait := s.locks.locked(lk, now); locked {
		return nil, &RateLimitedError{RetryAfter: wait, Locked: true}
	}
	ok, err := s.hash.check(ctx, u.Hash, oldPw)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.locks.fail(lk, time.Now())
		return nil, &badInput{"the current password is incorrect"}
	}
	nu, err := s.setPassword(ctx, tenant, u, rev, newPw)
	if err != nil {
		return nil, err
	}
	return s.issue(ctx, tenant, nu, time.Now().UTC())
}

// RequestReset makes a password-reset token for email, if it names a user,
// and hands it to the operator's hook. The caller learns nothing either way.
func (s *Service) RequestReset(ctx context.Context, tenant, email, ip string) error {
	if err := s.checkTenant(tenant); err != nil {
		return err
	}
	now := time.Now()
	if ok, wait := s.perIP.allow(ip, now); !ok {
		return &RateLimitedError{RetryAfter: wait}
	}
	norm, err := normalizeEmail(email)
	if err != nil {
		return err
	}
	if ok, wait := s.perEmail.allow("reset\x00"+lockKey(tenant, norm), now); !ok {
		return &RateLimitedError{RetryAfter: wait}
	}
	u, _, err := s.userByEmail(ctx, tenant, norm)
	if err != nil || u == nil {
		return err
	}
	id, sec := randomHex(16), randomHex(32)
	h := sha256.Sum256([]byte(sec))
	rt := ResetToken{Tenant: tenant, UserID: u.ID, Email: u.Email, Token: id + "." + sec, Expires: now.UTC().Add(s.cfg.ResetTTL)}
	rec, _ := json.Marshal(map[string]any{"user": u.ID, "hash": hex.EncodeToString(h[:]), "expires": rt.Expires})
	if _, err := s.tokens.Create(ctx, resetKey(tenant, id), rec); err != nil {
		return fmt.Errorf("storing a reset token for tenant %q: %w", tenant, err)
	}
	s.deliverReset(ctx, rt)
	return nil
}

// deliverReset hands a reset token to the hook and/or the reset function.
// Failures are logged for the operator; the caller is never told.
func (s *Service) deliverReset(ctx context.Context, rt ResetToken) {
	delivered := false
	if s.cfg.ResetHook != nil {
		if err := s.cfg.ResetHook(ctx, rt); err != nil {
			s.log.Error("password-reset hook failed", "tenant", rt.Tenant, "user", rt.UserID, "err", err)
		} else {
			delivered = true
		}
	}
	if s.cfg.ResetFunction != "" && s.cfg.Invoker != nil {
		payload, _ := json.Marshal(rt)
		if err := s.cfg.Invoker.InvokeAsync(ctx, rt.Tenant, s.cfg.ResetFunction, payload); err != nil {
			s.log.Error("password-reset function failed to start", "tenant", rt.Tenant, "function", s.cfg.ResetFunction, "err", err)
		} else {
			delivered = true
		}
	}
	if !delivered {
		s.log.Warn("password reset requested but no reset hook or function is configured", "tenant", rt.Tenant, "user", rt.UserID)
	}
}

// ConfirmReset sets a new password with a reset token (single use) and ends
// every session of the user.
func (s *Service) ConfirmReset(ctx context.Context, tenant, token, newPw, ip string) error {
	if err := s.checkTenant(tenant); err != nil {
		return err
	}
	if ok, wait := s.perIP.allow(ip, time.Now()); !ok {
		return &RateLimitedError{RetryAfter: wait}
	}
	if err := checkNewPassword(newPw); err != nil {
		return err
	}
	id, sec, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || len(id) != 32 || len(sec) != 64 {
		return ErrInvalidResetToken
	}
	if _, err := hex.DecodeString(id); err != nil {
		return ErrInvalidResetToken
	}
	e, err := s.tokens.Get(ctx, resetKey(tenant, id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrInvalidResetToken
		}
		return fmt.Errorf("reading a reset token of tenant %q: %w", tenant, err)
	}
	var rec struct {
		User    string    `json:"user"`
		Hash    string    `json:"hash"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return ErrInvalidResetToken
	}
	h := sha256.Sum256([]byte(sec))
	want, _ := hex.DecodeString(rec.Hash)
	if subtle.ConstantTimeCompare(h[:], want) != 1 || time.Now().After(rec.Expires) {
		return ErrInvalidResetToken
	}
	// Single use: whoever deletes this revision first owns the token.
	if err := s.tokens.Delete(ctx, resetKey(tenant, id), jetstream.LastRevision(e.Revision())); err != nil {
		return ErrInvalidResetToken
	}
	u, rev, err := s.user(ctx, tenant, rec.User)
	if err != nil {
		if errors.Is(err, ErrUserNotFound) {
			return ErrInvalidResetToken
		}
		return err
	}
	if _, err := s.setPassword(ctx, tenant, u, rev, newPw); err != nil {
		return err
	}
	s.locks.reset(lockKey(tenant, u.Email))
	return nil
}
