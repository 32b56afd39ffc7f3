// Package tenant owns Nimbus's tenants, their API keys and scopes, and their
// encrypted secrets: storage in the tenants KV bucket, the in-memory view the
// hot path authenticates against, and the control-plane HTTP API for all three.
//
// Layout of bus.BucketTenants (one bucket, three key families):
//
//	t.{tenant}          tenant record (name, created, quotas)
//	k.{keyid}           API key record (hash of the key, never the key)
//	s.{tenant}.{name}   secret record (AES-256-GCM ciphertext, never the value)
//
// Tenants and keys are mirrored in memory by a KV watch, so authenticating a
// request never touches the bus; secrets are read from KV when an instance
// starts (Resolve), which is off the hot path.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// KeyPrefix starts every Nimbus API key.
const KeyPrefix = "nmb_"

// DefaultTenant is the tenant that exists from the first start.
const DefaultTenant = registry.DefaultTenant

// Config configures the tenant service.
type Config struct {
	// Bus is the NATS connection; required.
	Bus *bus.Bus
	// DataDir holds admin.key and (unless SecretsKey is set) secrets.key.
	DataDir string
	// SecretsKey is the 32-byte AES-256 key for secrets. When nil it is read
	// from DataDir/secrets.key, generated there (0600) on first start. Every
	// node of a cluster must use the same key: set it explicitly there.
	SecretsKey []byte
	// AllowLoopbackAdmin makes requests from 127.0.0.1 or ::1 that carry no
	// key act as the default tenant's admin.
	AllowLoopbackAdmin bool
	// BeforeDeleteTenant, when set, is called before a tenant is deleted; an
	// error refuses the deletion (e.g. the tenant still has functions) and is
	// reported to the caller as is (use an *apierr.Error for a clear code).
	BeforeDeleteTenant func(ctx context.Context, tenant string) error
	Logger             *slog.Logger
}

// Quotas are a tenant's limits. Zero means "no limit" (the platform defaults
// apply). They are stored here and enforced by metering, scaler and the APIs.
type Quotas struct {
	MaxConcurrency   int     `json:"max_concurrency,omitempty"`
	MaxRPS           float64 `json:"max_rps,omitempty"`
	MonthlyGBSeconds float64 `json:"monthly_gb_seconds,omitempty"`
	MaxFunctions     int     `json:"max_functions,omitempty"`
	MaxStorageBytes  int64   `json:"max_storage_bytes,omitempty"`
}

func (q Quotas) validate() error {
	if q.MaxConcurrency < 0 || q.MaxRPS < 0 || q.MonthlyGBSeconds < 0 || q.MaxFunctions < 0 || q.MaxStorageBytes < 0 {
		return invalid("quotas must not be negative (0 means no limit)")
	}
	return nil
}

// Tenant is an isolated owner of functions, data, keys and usage.
type Tenant struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Quotas  Quotas    `json:"quotas"`
}

// badInput is a request the caller must fix; HTTP answers it with 400.
type badInput struct {
	msg  string
	name bool // an invalid name (invalid_name rather than bad_request)
}

func (e *badInput) Error() string { return e.msg }

func invalid(format string, args ...any) error { return &badInput{msg: fmt.Sprintf(format, args...)} }

// Errors of the tenant store.
var (
	ErrTenantNotFound = errors.New("tenant not found")
	ErrTenantExists   = errors.New("tenant already exists")
	ErrDefaultTenant  = errors.New("the default tenant cannot be deleted")
)

// Service is the tenant store, key authenticator and secret vault.
type Service struct {
	cfg Config
	log *slog.Logger
	kv  jetstream.KeyValue

	aead   secretCipher
	rawKey []byte // the secrets key, for DeriveKey

	// mu guards the write side of the in-memory view; readers load the
	// atomic snapshots below without locking.
	mu      sync.Mutex
	tenants atomic.Pointer[map[string]*tenantEntry]
	keys    atomic.Pointer[map[string]*keyEntry]
	// verified caches bearer strings whose hash has already been checked,
	// mapped to the key entry they were checked against (see Authenticate).
	verified     sync.Map // string -> *keyEntry
	verifiedSize atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
}

type tenantEntry struct {
	t       Tenant
	rev     uint64
	deleted bool
}

// New checks cfg and builds a Service; Start opens its storage.
func New(cfg Config) (*Service, error) {
	if cfg.Bus == nil {
		return nil, errors.New("tenant: a bus is required")
	}
	if cfg.SecretsKey == nil && cfg.DataDir == "" {
		return nil, errors.New("tenant: a data directory or a secrets key is required")
	}
	if cfg.SecretsKey != nil && len(cfg.SecretsKey) != 32 {
		return nil, fmt.Errorf("tenant: the secrets key must be 32 bytes, got %d", len(cfg.SecretsKey))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log.With("component", "tenant")}
	empT := map[string]*tenantEntry{}
	empK := map[string]*keyEntry{}
	s.tenants.Store(&empT)
	s.keys.Store(&empK)
	return s, nil
}

// Start opens the bucket and the secrets key, loads every tenant and key into
// memory and keeps them current with a KV watch until Stop.
func (s *Service) Start(ctx context.Context) error {
	kv, err := s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bus.BucketTenants,
		Description: "Nimbus tenants, API keys (hashed) and secrets (encrypted)",
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("tenant: %w", err)
	}
	s.kv = kv
	key := s.cfg.SecretsKey
	if key == nil {
		if key, err = loadOrCreateSecretsKey(s.cfg.DataDir); err != nil {
			return fmt.Errorf("tenant: %w", err)
		}
	}
	s.rawKey = key
	if s.aead, err = newSecretCipher(key); err != nil {
		return fmt.Errorf("tenant: %w", err)
	}
	// The watch lives until Stop, not until ctx (which only bounds Start).
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchFiltered(wctx, []string{"t.>", "k.>"})
	if err != nil {
		cancel()
		return fmt.Errorf("tenant: watching %s: %w", bus.BucketTenants, err)
	}
	// Load the initial values synchronously: nil marks the end of them.
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				cancel()
				return fmt.Errorf("tenant: watch of %s closed during load", bus.BucketTenants)
			}
			if e == nil {
				loaded = true
				continue
			}
			s.apply(e)
		case <-ctx.Done():
			_ = w.Stop()
			cancel()
			return ctx.Err()
		}
	}
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.watch(wctx, w)
	return nil
}

// Stop ends the watch and waits for it.
func (s *Service) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch applies KV changes to the in-memory view; when the watcher ends
// (connection trouble) it re-opens it from the current state.
func (s *Service) watch(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(s.done)
	for {
		for e := range w.Updates() {
			if e != nil {
				s.apply(e)
			}
			if ctx.Err() != nil {
				break
			}
		}
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("tenant watch ended; re-opening")
		for {
			var err error
			w, err = s.kv.WatchFiltered(ctx, []string{"t.>", "k.>"})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// apply folds one KV entry into the in-memory view, ignoring entries older
// than what a local write already applied.
func (s *Service) apply(e jetstream.KeyValueEntry) {
	k := e.Key()
	del := e.Operation() != jetstream.KeyValuePut
	switch {
	case strings.HasPrefix(k, "t."):
		name := k[2:]
		if del {
			s.dropTenant(name, e.Revision())
			return
		}
		var t Tenant
		if err := json.Unmarshal(e.Value(), &t); err != nil {
			s.log.Error("unreadable tenant record", "key", k, "err", err)
			return
		}
		s.putTenant(&tenantEntry{t: t, rev: e.Revision()}, false)
	case strings.HasPrefix(k, "k."):
		id := k[2:]
		if del {
			s.dropKey(id, e.Revision())
			return
		}
		ke, err := decodeKey(e.Value(), e.Revision())
		if err != nil {
			s.log.Error("unreadable API key record", "key", k, "err", err)
			return
		}
		s.putKey(ke, false)
	}
}

// localDelete marks an entry deleted by this node whose purge the watch has
// not confirmed yet: stale puts still in flight must not resurrect it.
const localDelete = ^uint64(0)

// putTenant applies a tenant record. local is true for this node's own
// writes, which win over a pending local tombstone.
func (s *Service) putTenant(te *tenantEntry, local bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.tenants.Load()
	if cur, ok := old[te.t.Name]; ok && cur.rev >= te.rev && !(local && cur.rev == localDelete) {
		return
	}
	m := make(map[string]*tenantEntry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[te.t.Name] = te
	s.tenants.Store(&m)
}

// dropTenant leaves a tombstone at rev (localDelete for this node's deletes).
func (s *Service) dropTenant(name string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.tenants.Load()
	if cur, ok := old[name]; ok && cur.rev > rev && cur.rev != localDelete {
		return
	}
	m := make(map[string]*tenantEntry, len(old))
	for k, v := range old {
		m[k] = v
	}
	m[name] = &tenantEntry{t: Tenant{Name: name}, rev: rev, deleted: true}
	s.tenants.Store(&m)
}

func (s *Service) lookupTenant(name string) (*tenantEntry, bool) {
	te, ok := (*s.tenants.Load())[name]
	if !ok || te.deleted {
		return nil, false
	}
	return te, true
}

// Exists reports whether tenant exists (from memory; no bus access).
func (s *Service) Exists(tenant string) bool {
	_, ok := s.lookupTenant(tenant)
	return ok
}

// Tenant returns a tenant (from memory).
func (s *Service) Tenant(tenant string) (Tenant, error) {
	te, ok := s.lookupTenant(tenant)
	if !ok {
		return Tenant{}, fmt.Errorf("tenant %q: %w", tenant, ErrTenantNotFound)
	}
	return te.t, nil
}

// Quotas returns a tenant's quotas (from memory); zero Quotas when unknown.
func (s *Service) Quotas(tenant string) Quotas {
	if te, ok := s.lookupTenant(tenant); ok {
		return te.t.Quotas
	}
	return Quotas{}
}

// Tenants returns every tenant, sorted by name (from memory).
func (s *Service) Tenants() []Tenant {
	m := *s.tenants.Load()
	out := make([]Tenant, 0, len(m))
	for _, te := range m {
		if te.deleted {
			continue
		}
		out = append(out, te.t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CreateTenant adds a tenant.
func (s *Service) CreateTenant(ctx context.Context, name string, q Quotas) (Tenant, error) {
	if err := registry.CheckName("tenant", name); err != nil {
		return Tenant{}, &badInput{msg: err.Error(), name: true}
	}
	if err := q.validate(); err != nil {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, err)
	}
	t := Tenant{Name: name, Created: time.Now().UTC(), Quotas: q}
	b, _ := json.Marshal(t)
	rev, err := s.kv.Create(ctx, "t."+name, b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrTenantExists)
		}
		return Tenant{}, fmt.Errorf("creating tenant %q: %w", name, err)
	}
	s.putTenant(&tenantEntry{t: t, rev: rev}, true)
	return t, nil
}

// SetQuotas replaces a tenant's quotas.
func (s *Service) SetQuotas(ctx context.Context, name string, q Quotas) (Tenant, error) {
	if err := q.validate(); err != nil {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, err)
	}
	e, err := s.kv.Get(ctx, "t."+name)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrTenantNotFound)
		}
		return Tenant{}, fmt.Errorf("reading tenant %q: %w", name, err)
	}
	var t Tenant
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return Tenant{}, fmt.Errorf("reading tenant %q: %w", name, err)
	}
	t.Quotas = q
	b, _ := json.Marshal(t)
	rev, err := s.kv.Update(ctx, "t."+name, b, e.Revision())
	if err != nil {
		return Tenant{}, fmt.Errorf("updating tenant %q (changed concurrently? retry): %w", name, err)
	}
	s.putTenant(&tenantEntry{t: t, rev: rev}, true)
	return t, nil
}

// DeleteTenant removes a tenant with its keys and secrets. The default
// tenant cannot be deleted.
func (s *Service) DeleteTenant(ctx context.Context, name string) error {
	if name == DefaultTenant {
		return ErrDefaultTenant
	}
	if _, err := s.kv.Get(ctx, "t."+name); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("tenant %q: %w", name, ErrTenantNotFound)
		}
		return fmt.Errorf("deleting tenant %q: %w", name, err)
	}
	if s.cfg.BeforeDeleteTenant != nil {
		if err := s.cfg.BeforeDeleteTenant(ctx, name); err != nil {
			return err
		}
	}
	// Keys first: once the tenant record is gone nothing may still log in as it.
	for _, k := range s.keysOf(name) {
		if err := s.kv.Purge(ctx, "k."+k.ID); err != nil {
			return fmt.Errorf("deleting tenant %q: removing key %s: %w", name, k.ID, err)
		}
		s.dropKey(k.ID, localDelete)
	}
	names, err := s.secretKeys(ctx, name)
	if err != nil {
		return fmt.Errorf("deleting tenant %q: %w", name, err)
	}
	for _, k := range names {
		if err := s.kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("deleting tenant %q: removing secret: %w", name, err)
		}
	}
	if err := s.kv.Purge(ctx, "t."+name); err != nil {
		return fmt.Errorf("deleting tenant %q: %w", name, err)
	}
	s.dropTenant(name, localDelete)
	return nil
}

// ensureDefault creates the default tenant when missing.
func (s *Service) ensureDefault(ctx context.Context) error {
	if s.Exists(DefaultTenant) {
		return nil
	}
	if _, err := s.CreateTenant(ctx, DefaultTenant, Quotas{}); err != nil && !errors.Is(err, ErrTenantExists) {
		return err
	}
	return nil
}
