// Package auth owns the end users of apps built on Nimbus: per-tenant user
// pools with sign-up, log-in, rotating refresh tokens, log-out, password
// change and reset, rate-limited log-in with lockout, EdDSA-signed JWT access
// tokens with a JWKS per tenant, and Verify for the gateway.
//
// Storage (JetStream KV):
//
//	bus.BucketAuth        u.{tenant}.{user id}     user (argon2id hash, never the password)
//	                      e.{tenant}.{sha256(email)} email index → user id
//	                      sk.{tenant}              the tenant's signing keys
//	bus.BucketAuthTokens  f.{tenant}.{family id}   refresh-token family (hash of its current token)
//	                      p.{tenant}.{token id}    password-reset token (hash, expiry)
//
// Rate limits and lockouts are kept in memory on each node.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// TenantLookup says whether a tenant exists; *tenant.Service satisfies it.
type TenantLookup interface {
	Exists(tenant string) bool
}

// AsyncInvoker starts a function asynchronously; the invoke/async layer
// satisfies it. Used to hand reset tokens to the operator's function.
type AsyncInvoker interface {
	InvokeAsync(ctx context.Context, tenant, function string, payload []byte) error
}

// ResetToken is what the operator's hook receives for a password reset: it
// must reach the user some other way (Nimbus sends no email).
type ResetToken struct {
	Tenant  string    `json:"tenant"`
	UserID  string    `json:"user_id"`
	Email   string    `json:"email"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// Config configures the auth service. Zero durations and counts mean the
// documented defaults.
type Config struct {
	Bus *bus.Bus
	// Tenants, when set, limits user pools to existing tenants.
	Tenants TenantLookup
	// KeyEncryptionKey (32 bytes) seals the signing keys' private halves at
	// rest; tenant.Service.DeriveKey("auth-signing-keys") gives one.
	KeyEncryptionKey []byte
	// AccessTTL is the access token lifetime (default 15 min).
	AccessTTL time.Duration
	// RefreshTTL is how long an unused refresh token family lives (default 30 days).
	RefreshTTL time.Duration
	// ResetTTL is how long a password-reset token is valid (default 1 h).
	ResetTTL time.Duration
	Argon2   Argon2Params
	// MaxConcurrentHashes bounds parallel argon2 work (default 2 × GOMAXPROCS).
	MaxConcurrentHashes int
	// LoginPerIP is the sustained rate of log-in, sign-up and reset attempts
	// per client IP, per second (default 1), with LoginPerIPBurst (default 20).
	LoginPerIP      float64
	LoginPerIPBurst int
	// LoginPerEmail is the sustained rate of log-in attempts per tenant and
	// email, per second (default 0.2), with LoginPerEmailBurst (default 10).
	LoginPerEmail      float64
	LoginPerEmailBurst int
	// MaxFailures consecutive failed log-ins lock an email for LockoutPeriod
	// (defaults 5 and 15 min).
	MaxFailures   int
	LockoutPeriod time.Duration
	// TrustForwardedFor takes the client IP from X-Forwarded-For (only
	// behind a proxy that sets it).
	TrustForwardedFor bool
	// ResetHook receives reset tokens (in-process operators and tests).
	ResetHook func(ctx context.Context, t ResetToken) error
	// ResetFunction, with Invoker, names a function of the tenant that is
	// invoked asynchronously with the ResetToken as JSON.
	ResetFunction string
	Invoker       AsyncInvoker
	Logger        *slog.Logger
}

func (c *Config) defaults() {
	if c.AccessTTL == 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 30 * 24 * time.Hour
	}
	if c.ResetTTL == 0 {
		c.ResetTTL = time.Hour
	}
	c.Argon2 = c.Argon2.withDefaults()
	if c.MaxConcurrentHashes == 0 {
		c.MaxConcurrentHashes = 2 * runtime.GOMAXPROCS(0)
	}
	if c.LoginPerIP == 0 {
		c.LoginPerIP = 1
	}
	if c.LoginPerIPBurst == 0 {
		c.LoginPerIPBurst = 20
	}
	if c.LoginPerEmail == 0 {
		c.LoginPerEmail = 0.2
	}
	if c.LoginPerEmailBurst == 0 {
		c.LoginPerEmailBurst = 10
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.LockoutPeriod == 0 {
		c.LockoutPeriod = 15 * time.Minute
	}
}

// Service is the user pools of every tenant.
type Service struct {
	cfg    Config
	log    *slog.Logger
	kv     jetstream.KeyValue // users, email index, signing keys
	tokens jetstream.KeyValue // refresh families, reset tokens
	kc     keyCache
	hash   *hasher
	// verified caches checked access tokens (see Verify).
	verified  sync.Map // token -> *verifiedToken
	verifiedN atomic.Int64

	perIP    *limiter
	perEmail *limiter
	locks    *lockout

	stop chan struct{}
	wg   sync.WaitGroup
}

// New checks cfg and builds a Service; Start opens its storage.
func New(cfg Config) (*Service, error) {
	if cfg.Bus == nil {
		return nil, errors.New("auth: a bus is required")
	}
	if cfg.KeyEncryptionKey != nil && len(cfg.KeyEncryptionKey) != 32 {
		return nil, fmt.Errorf("auth: the key encryption key must be 32 bytes, got %d", len(cfg.KeyEncryptionKey))
	}
	cfg.defaults()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{
		cfg:      cfg,
		log:      log.With("component", "auth"),
		perIP:    newLimiter(cfg.LoginPerIP, cfg.LoginPerIPBurst),
		perEmail: newLimiter(cfg.LoginPerEmail, cfg.LoginPerEmailBurst),
		locks:    newLockout(cfg.MaxFailures, cfg.LockoutPeriod),
	}
	return s, nil
}

// Start opens the buckets and starts the sweeper of idle rate-limit state.
func (s *Service) Start(ctx context.Context) error {
	var err error
	if s.kv, err = s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bus.BucketAuth, Description: "Nimbus app users and signing keys (private)", History: 1,
	}); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if s.tokens, err = s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bus.BucketAuthTokens, Description: "Nimbus app refresh-token families and reset tokens (private)",
		History: 1, TTL: max(s.cfg.RefreshTTL, s.cfg.ResetTTL),
	}); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if s.hash, err = newHasher(s.cfg.Argon2, s.cfg.MaxConcurrentHashes); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	s.stop = make(chan struct{})
	s.wg.Add(1)
	go s.sweeper()
	return nil
}

// Stop ends the sweeper and waits for it.
func (s *Service) Stop(ctx context.Context) error {
	if s.stop == nil {
		return nil
	}
	close(s.stop)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.perIP.sweep(now)
			s.perEmail.sweep(now)
			s.locks.sweep(now)
			s.sweepVerified(now)
		}
	}
}

// Errors that the HTTP layer maps to answers.
var (
	// ErrInvalidCredentials: wrong email or wrong password; never says which.
	ErrInvalidCredentials = errors.New("email or password is incorrect")
	ErrEmailTaken         = errors.New("an account with this email already exists")
	ErrTenantNotFound     = errors.New("tenant not found")
	ErrUserNotFound       = errors.New("user not found")
	ErrInvalidResetToken  = errors.New("reset token is invalid, expired or already used")
)

// badInput is a request the caller must fix (400).
type badInput struct{ msg string }

func (e *badInput) Error() string { return e.msg }

// RateLimitedError is a refused attempt: too many, or the email is locked.
type RateLimitedError struct {
	RetryAfter time.Duration
	Locked     bool
}

func (e *RateLimitedError) Error() string {
	if e.Locked {
		return "too many failed log-ins for this account; try again later"
	}
	return "too many attempts; slow down"
}

// userRecord is a user at rest.
type userRecord struct {
	ID      string         `json:"id"`
	Email   string         `json:"email"`
	Hash    string         `json:"hash"`
	Created time.Time      `json:"created"`
	Updated time.Time      `json:"updated"`
	Claims  map[string]any `json:"claims,omitempty"`
	// TokensValidAfter invalidates refresh families created before it
	// (set when the password changes).
	TokensValidAfter time.Time `json:"tokens_valid_after"`
}

// UserInfo is a user as shown to the user and to operators.
type UserInfo struct {
	ID      string         `json:"id"`
	Email   string         `json:"email"`
	Created time.Time      `json:"created"`
	Claims  map[string]any `json:"claims,omitempty"`
}

func (u *userRecord) info() UserInfo {
	return UserInfo{ID: u.ID, Email: u.Email, Created: u.Created, Claims: u.Claims}
}

// Tokens is the answer to sign-up, log-in, refresh and password change.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	User         struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"user"`
}

func userKey(tenant, id string) string { return "u." + tenant + "." + id }

func emailKey(tenant, email string) string {
	h := sha256.Sum256([]byte(email))
	return "e." + tenant + "." + hex.EncodeToString(h[:])
}

func familyKey(tenant, id string) string { return "f." + tenant + "." + id }
func resetKey(tenant, id string) string  { return "p." + tenant + "." + id }

// checkTenant refuses names that are invalid or not tenants.
func (s *Service) checkTenant(tenant string) error {
	if !registry.ValidName(tenant) || (s.cfg.Tenants != nil && !s.cfg.Tenants.Exists(tenant)) {
		return fmt.Errorf("tenant %q: %w", tenant, ErrTenantNotFound)
	}
	return nil
}

// normalizeEmail validates an email address and lower-cases it.
func normalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	if e == "" {
		return "", &badInput{"email is required"}
	}
	if len(e) > 254 {
		return "", &badInput{"email is longer than 254 characters"}
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", &badInput{fmt.Sprintf("email %q is not a valid address like name@example.com", email)}
	}
	at := strings.LastIndexByte(e, '@')
	if at < 1 || !strings.Contains(e[at+1:], ".") {
		return "", &badInput{fmt.Sprintf("email %q needs a domain like example.com", email)}
	}
	return e, nil
}

// MinPasswordLen and MaxPasswordLen bound passwords (in characters, bytes).
const (
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

func checkNewPassword(pw string) error {
	if utf8.RuneCountInString(pw) < MinPasswordLen {
		return &badInput{fmt.Sprintf("password must be at least %d characters", MinPasswordLen)}
	}
	if len(pw) > MaxPasswordLen {
		return &badInput{fmt.Sprintf("password must be at most %d bytes", MaxPasswordLen)}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SignUp creates a user and logs it in.
func (s *Service) SignUp(ctx context.Context, tenant, email, password, ip string) (*Tokens, error) {
	if err := s.checkTenant(tenant); err != nil {
		return nil, err
	}
	if ok, wait := s.perIP.allow(ip, time.Now()); !ok {
		return nil, &RateLimitedError{RetryAfter: wait}
	}
	email, err := normalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if err := checkNewPassword(password); err != nil {
		return nil, err
	}
	hash, err := s.hash.hash(ctx, password)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	u := &userRecord{ID: randomHex(16), Email: email, Hash: hash, Created: now, Updated: now, TokensValidAfter: now}
	idx, _ := json.Marshal(map[string]string{"id": u.ID})
	if _, err := s.kv.Create(ctx, emailKey(tenant, email), idx); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("sign-up in tenant %q: %w", tenant, err)
		}
		// Taken, unless a sign-up crashed between the index and the user.
		if err := s.adoptOrphanIndex(ctx, tenant, email, idx); err != nil {
			return nil, err
		}
	}
	b, _ := json.Marshal(u)
	if _, err := s.kv.Create(ctx, userKey(tenant, u.ID), b); err != nil {
		return nil, fmt.Errorf("sign-up in tenant %q: %w", tenant, err)
	}
	return s.issue(ctx, tenant, u, now)
}

func (s *Service) adoptOrphanIndex(ctx context.Context, tenant, email string, idx []byte) error {
	e, err := s.kv.Get(ctx, emailKey(tenant, email))
	if err != nil {
		return fmt.Errorf("sign-up in tenant %q: %w", tenant, err)
	}
	var ref struct{ ID string }
	_ = json.Unmarshal(e.Value(), &ref)
	if _, err := s.kv.Get(ctx, userKey(tenant, ref.ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrEmailTaken
	}
	if _, err := s.kv.Update(ctx, emailKey(tenant, email), idx, e.Revision()); err != nil {
		return ErrEmailTaken
	}
	return nil
}

// user loads a user by id.
func (s *Service) user(ctx context.Context, tenant, id string) (*userRecord, uint64, error) {
	e, err := s.kv.Get(ctx, userKey(tenant, id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return nil, 0, fmt.Errorf("user %q of tenant %q: %w", id, tenant, ErrUserNotFound)
		}
		return nil, 0, fmt.Errorf("reading user %q of tenant %q: %w", id, tenant, err)
	}
	var u userRecord
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return nil, 0, fmt.Errorf("reading user %q of tenant %q: %w", id, tenant, err)
	}
	return &u, e.Revision(), nil
}

// userByEmail loads a user by (normalized) email; nil when there is none.
func (s *Service) userByEmail(ctx context.Context, tenant, email string) (*userRecord, uint64, error) {
	e, err := s.kv.Get(ctx, emailKey(tenant, email))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("looking up a user of tenant %q: %w", tenant, err)
	}
	var ref struct{ ID string }
	if err := json.Unmarshal(e.Value(), &ref); err != nil {
		return nil, 0, fmt.Errorf("email index of tenant %q: %w", tenant, err)
	}
	u, rev, err := s.user(ctx, tenant, ref.ID)
	if errors.Is(err, ErrUserNotFound) {
		return nil, 0, nil
	}
	return u, rev, err
}

func lockKey(tenant, email string) string { return tenant + "\x00" + email }

// LogIn checks an email and password. Wrong email and wrong password give
// the same error after the same work; too many attempts give a
// *RateLimitedError.
func (s *Service) LogIn(ctx context.Context, tenant, email, password, ip string) (*Tokens, error) {
	if err := s.checkTenant(tenant); err != nil {
		return nil, err
	}
	now := time.Now()
	if ok, wait := s.perIP.allow(ip, now); !ok {
		return nil, &RateLimitedError{RetryAfter: wait}
	}
	norm, err := normalizeEmail(email)
	if err != nil {
		return nil, ErrInvalidCredentials
	}
	lk := lockKey(tenant, norm)
	if locked, wait := s.locks.locked(lk, now); locked {
		return nil, &RateLimitedError{RetryAfter: wait, Locked: true}
	}
	if ok, wait := s.perEmail.allow(lk, now); !ok {
		return nil, &RateLimitedError{RetryAfter: wait}
	}
	u, _, err := s.userByEmail(ctx, tenant, norm)
	if err != nil {
		return nil, err
	}
	encoded := ""
	if u != nil {
		encoded = u.Hash
	}
	ok, err := s.hash.check(ctx, encoded, password)
	if err != nil {
		return nil, err
	}
	if !ok {
		if s.locks.fail(lk, time.Now()) {
			s.log.Info("log-in locked after repeated failures", "tenant", tenant, "ip", ip)
		}
		return nil, ErrInvalidCredentials
	}
	s.locks.reset(lk)
	return s.issue(ctx, tenant, u, time.Now().UTC())
}

// Me returns the user an access token names.
func (s *Service) Me(ctx context.Context, tenant, bearer string) (UserInfo, error) {
	if err := s.checkTenant(tenant); err != nil {
		return UserInfo{}, err
	}
	v, err := s.Verify(ctx, tenant, bearer)
	if err != nil {
		return UserInfo{}, err
	}
	u, _, err := s.user(ctx, tenant, v.ID)
	if err != nil {
		if errors.Is(err, ErrUserNotFound) {
			return UserInfo{}, fmt.Errorf("user gone: %w", ErrInvalidToken)
		}
		return UserInfo{}, err
	}
	return u.info(), nil
}
