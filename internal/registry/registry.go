// Package registry owns functions, their immutable versions and aliases (in a
// JetStream KV bucket) and their code (in the JetStream object store, addressed
// by SHA-256). Requests read an in-memory view that a KV watch keeps current, so
// the hot path never touches the bus.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// Errors the registry returns; callers map them onto API codes.
var (
	ErrNotFound        = errors.New("not found")
	ErrVersionNotFound = errors.New("version not found")
	ErrConflict        = errors.New("conflict")
)

// Options configures a Registry.
type Options struct {
	Bus *bus.Bus
	// CacheDir keeps a local copy of artifacts by digest.
	CacheDir string
	Logger   *slog.Logger
}

// Event tells watchers that a function changed (deployed, aliased or deleted).
type Event struct {
	Tenant, Function string
	Deleted          bool
}

// Registry is the function catalog.
type Registry struct {
	cfg  Options
	kv   jetstream.KeyValue
	obj  jetstream.ObjectStore
	log  *slog.Logger
	stop context.CancelFunc
	done chan struct{}

	mu       sync.RWMutex
	fns      map[fnKey]*entry
	watchers []func(Event)
}

type fnKey struct{ tenant, name string }

type entry struct {
	fn       *Function
	fnRev    uint64
	versions map[int]*Version
}

// New builds a Registry; Start opens its buckets and loads the view.
func New(cfg Options) *Registry {
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Registry{cfg: cfg, log: l.With("component", "registry"), fns: map[fnKey]*entry{}}
}

// Start opens the buckets and blocks until the in-memory view holds every
// stored function, then keeps it current in the background.
func (r *Registry) Start(ctx context.Context) error {
	var err error
	r.kv, err = r.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketRegistry, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	r.obj, err = r.cfg.Bus.ObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bus.BucketArtifacts, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := r.kv.WatchAll(wctx, jetstream.IncludeHistory())
	if err != nil {
		cancel()
		return fmt.Errorf("registry: watch: %w", err)
	}
	r.stop = cancel
	r.done = make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(r.done)
		defer w.Stop()
		readyOnce := sync.OnceFunc(func() { close(ready) })
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					readyOnce()
					continue
				}
				r.apply(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		r.Stop(context.Background())
		return ctx.Err()
	}
}

// Stop ends the watch.
func (r *Registry) Stop(ctx context.Context) error {
	if r.stop != nil {
		r.stop()
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Watch registers f to be called (from the watch goroutine) after each change.
func (r *Registry) Watch(f func(Event)) {
	r.mu.Lock()
	r.watchers = append(r.watchers, f)
	r.mu.Unlock()
}

func fnKV(tenant, name string) string { return tenant + ".fn." + name }
func verKV(tenant, name string, n int) string {
	return tenant + ".ver." + name + "." + strconv.Itoa(n)
}

// apply folds one KV entry into the view. It is idempotent, so that local
// writes can be applied at once and again when the watch delivers them.
func (r *Registry) apply(key string, value []byte, rev uint64, deleted bool) {
	parts := strings.Split(key, ".")
	if len(parts) < 3 {
		return
	}
	tenant, kind, name := parts[0], parts[1], parts[2]
	k := fnKey{tenant, name}
	var ev *Event
	r.mu.Lock()
	switch kind {
	case "fn":
		e := r.fns[k]
		if deleted {
			if e != nil && rev >= e.fnRev {
				delete(r.fns, k)
				ev = &Event{Tenant: tenant, Function: name, Deleted: true}
			}
			break
		}
		var f Function
		if json.Unmarshal(value, &f) != nil {
			break
		}
		if e == nil {
			e = &entry{versions: map[int]*Version{}}
			r.fns[k] = e
		}
		if rev >= e.fnRev {
			e.fn, e.fnRev = &f, rev
			ev = &Event{Tenant: tenant, Function: name}
		}
	case "ver":
		if len(parts) != 4 {
			break
		}
		n, err := strconv.Atoi(parts[3])
		if err != nil {
			break
		}
		e := r.fns[k]
		if deleted {
			if e != nil {
				delete(e.versions, n)
			}
			break
		}
		var v Version
		if json.Unmarshal(value, &v) != nil {
			break
		}
		if e == nil {
			e = &entry{versions: map[int]*Version{}}
			r.fns[k] = e
		}
		e.versions[n] = &v
	}
	watchers := r.watchers
	r.mu.Unlock()
	if ev != nil {
		for _, f := range watchers {
			f(*ev)
		}
	}
}

// Function returns a copy of a function record.
func (r *Registry) Function(tenant, name string) (*Function, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.fns[fnKey{tenant, name}]
	if e == nil || e.fn == nil {
		return nil, fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	f := *e.fn
	f.Aliases = make(map[string]Alias, len(e.fn.Aliases))
	for k, v := range e.fn.Aliases {
		f.Aliases[k] = v
	}
	return &f, nil
}

// Functions lists a tenant's functions by name.
func (r *Registry) Functions(tenant string) []*Function {
	r.mu.RLock()
	var out []*Function
	for k, e := range r.fns {
		if k.tenant == tenant && e.fn != nil {
			f := *e.fn
			out = append(out, &f)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Each calls f with every function of every tenant.
func (r *Registry) Each(f func(*Function)) {
	r.mu.RLock()
	fns := make([]*Function, 0, len(r.fns))
	for _, e := range r.fns {
		if e.fn != nil {
			c := *e.fn
			fns = append(fns, &c)
		}
	}
	r.mu.RUnlock()
	for _, fn := range fns {
		f(fn)
	}
}

// Count returns how many functions a tenant has.
func (r *Registry) Count(tenant string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for k, e := range r.fns {
		if k.tenant == tenant && e.fn != nil {
			n++
		}
	}
	return n
}

// Versions lists a function's versions, oldest first.
func (r *Registry) Versions(tenant, name string) ([]*Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.fns[fnKey{tenant, name}]
	if e == nil || e.fn == nil {
		return nil, fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	out := make([]*Version, 0, len(e.versions))
	for _, v := range e.versions {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// Resolve returns the version that qualifier names: "" or an alias name
// ("live" when empty), or a version number. This is the hot path: memory only.
func (r *Registry) Resolve(tenant, name, qualifier string) (*Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.fns[fnKey{tenant, name}]
	if e == nil || e.fn == nil {
		return nil, fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	n := 0
	if qualifier == "" {
		qualifier = LiveAlias
	}
	if c := qualifier[0]; c >= '0' && c <= '9' {
		v, err := strconv.Atoi(qualifier)
		if err != nil {
			return nil, fmt.Errorf("function %q qualifier %q: %w", name, qualifier, ErrVersionNotFound)
		}
		n = v
	} else {
		a, ok := e.fn.Aliases[qualifier]
		if !ok {
			if qualifier != LiveAlias {
				return nil, fmt.Errorf("function %q has no alias %q: %w", name, qualifier, ErrVersionNotFound)
			}
		}
		n = a.Version
		if n == 0 {
			n = e.fn.Latest
		}
		if a.Weight > 0 && a.Additional > 0 && rand.Float64() < a.Weight {
			n = a.Additional
		}
	}
	v := e.versions[n]
	if v == nil {
		return nil, fmt.Errorf("function %q version %d: %w", name, n, ErrVersionNotFound)
	}
	return v, nil
}

// NextVersion returns the number the next deploy of name will most likely get.
func (r *Registry) NextVersion(tenant, name string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.fns[fnKey{tenant, name}]; e != nil && e.fn != nil {
		return e.fn.Latest + 1
	}
	return 1
}

// Deploy stores a new immutable version of name (creating the function on its
// first deploy) and moves "live" to it unless live is pinned.
func (r *Registry) Deploy(ctx context.Context, tenant, name, digest string, size int64, cfg Config) (*Version, error) {
	if err := CheckName("function", name); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 20; attempt++ {
		now := time.Now().UTC()
		f, rev, err := r.load(ctx, tenant, name)
		if err != nil {
			return nil, err
		}
		if f == nil {
			f = &Function{Tenant: tenant, Name: name, Created: now, Aliases: map[string]Alias{LiveAlias: {}}}
		}
		v := &Version{Tenant: tenant, Function: name, Number: f.Latest + 1, Created: now, Digest: digest, Size: size, Config: cfg}
		vb, _ := json.Marshal(v)
		vrev, err := r.kv.Create(ctx, verKV(tenant, name, v.Number), vb)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				// A concurrent deploy took this number; bump latest past it.
				f.Latest = v.Number
				_ = r.saveFn(ctx, f, rev)
				continue
			}
			return nil, fmt.Errorf("registry: store version %d of %q: %w", v.Number, name, err)
		}
		f.Latest = v.Number
		f.Updated = now
		if err := r.saveFn(ctx, f, rev); err != nil {
			if errors.Is(err, ErrConflict) {
				// Keep the version; the retry stores the function record.
				_ = r.kv.Delete(ctx, verKV(tenant, name, v.Number))
				continue
			}
			return nil, err
		}
		r.apply(verKV(tenant, name, v.Number), vb, vrev, false)
		return v, nil
	}
	return nil, fmt.Errorf("registry: deploy %q: too many concurrent deploys, try again", name)
}

func (r *Registry) load(ctx context.Context, tenant, name string) (*Function, uint64, error) {
	e, err := r.kv.Get(ctx, fnKV(tenant, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("registry: read %q: %w", name, err)
	}
	var f Function
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return nil, 0, fmt.Errorf("registry: decode %q: %w", name, err)
	}
	if f.Aliases == nil {
		f.Aliases = map[string]Alias{}
	}
	return &f, e.Revision(), nil
}

// saveFn writes f with compare-and-set on rev (0 = must not exist).
func (r *Registry) saveFn(ctx context.Context, f *Function, rev uint64) error {
	b, _ := json.Marshal(f)
	var nrev uint64
	var err error
	if rev == 0 {
		nrev, err = r.kv.Create(ctx, fnKV(f.Tenant, f.Name), b)
	} else {
		nrev, err = r.kv.Update(ctx, fnKV(f.Tenant, f.Name), b, rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return ErrConflict
		}
		return fmt.Errorf("registry: store %q: %w", f.Name, err)
	}
	r.apply(fnKV(f.Tenant, f.Name), b, nrev, false)
	return nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
	}
	return strings.Contains(err.Error(), "wrong last sequence")
}

// SetAlias points alias at a version (0 = follow latest), optionally splitting
// traffic with an additional version.
func (r *Registry) SetAlias(ctx context.Context, tenant, name, alias string, a Alias) error {
	if err := CheckName("alias", alias); err != nil {
		return err
	}
	if alias[0] >= '0' && alias[0] <= '9' {
		return fmt.Errorf("alias name %q must not start with a digit", alias)
	}
	if a.Weight < 0 || a.Weight > 1 {
		return fmt.Errorf("alias weight %v must be between 0 and 1", a.Weight)
	}
	for attempt := 0; attempt < 20; attempt++ {
		f, rev, err := r.load(ctx, tenant, name)
		if err != nil {
			return err
		}
		if f == nil {
			return fmt.Errorf("function %q: %w", name, ErrNotFound)
		}
		for _, n := range []int{a.Version, a.Additional} {
			if n < 0 || n > f.Latest {
				return fmt.Errorf("function %q has no version %d: %w", name, n, ErrVersionNotFound)
			}
		}
		f.Aliases[alias] = a
		f.Updated = time.Now().UTC()
		if err := r.saveFn(ctx, f, rev); errors.Is(err, ErrConflict) {
			continue
		} else {
			return err
		}
	}
	return fmt.Errorf("registry: alias %q of %q: too many concurrent changes", alias, name)
}

// DeleteAlias removes an alias other than "live".
func (r *Registry) DeleteAlias(ctx context.Context, tenant, name, alias string) error {
	if alias == LiveAlias {
		return fmt.Errorf("the %q alias cannot be removed; point it at a version instead", LiveAlias)
	}
	for attempt := 0; attempt < 20; attempt++ {
		f, rev, err := r.load(ctx, tenant, name)
		if err != nil {
			return err
		}
		if f == nil {
			return fmt.Errorf("function %q: %w", name, ErrNotFound)
		}
		if _, ok := f.Aliases[alias]; !ok {
			return fmt.Errorf("function %q has no alias %q: %w", name, alias, ErrNotFound)
		}
		delete(f.Aliases, alias)
		if err := r.saveFn(ctx, f, rev); errors.Is(err, ErrConflict) {
			continue
		} else {
			return err
		}
	}
	return fmt.Errorf("registry: alias %q of %q: too many concurrent changes", alias, name)
}

// Delete removes a function and all its versions. Artifacts stay (they are
// shared by digest).
func (r *Registry) Delete(ctx context.Context, tenant, name string) error {
	f, _, err := r.load(ctx, tenant, name)
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	if err := r.kv.Purge(ctx, fnKV(tenant, name)); err != nil {
		return fmt.Errorf("registry: delete %q: %w", name, err)
	}
	r.mu.RLock()
	var nums []int
	if e := r.fns[fnKey{tenant, name}]; e != nil {
		for n := range e.versions {
			nums = append(nums, n)
		}
	}
	r.mu.RUnlock()
	for n := 1; n <= f.Latest; n++ {
		nums = append(nums, n)
	}
	seen := map[int]bool{}
	for _, n := range nums {
		if !seen[n] {
			seen[n] = true
			_ = r.kv.Purge(ctx, verKV(tenant, name, n))
		}
	}
	r.apply(fnKV(tenant, name), nil, ^uint64(0)>>1, true)
	return nil
}

// PutArtifact stores code read from src (at most limit bytes) and returns its
// digest ("sha256:<hex>"). Storing the same code twice stores it once.
func (r *Registry) PutArtifact(ctx context.Context, src io.Reader, limit int64) (string, int64, error) {
	data, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		return "", 0, fmt.Errorf("reading the artifact: %w", err)
	}
	if int64(len(data)) > limit {
		return "", 0, fmt.Errorf("artifact is over the %d-byte limit: %w", limit, ErrTooLarge)
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if ok, _ := r.HasArtifact(ctx, digest); !ok {
		if _, err := r.obj.PutBytes(ctx, objName(digest), data); err != nil {
			return "", 0, fmt.Errorf("registry: store artifact %s: %w", digest, err)
		}
	}
	r.cacheArtifact(digest, data)
	return digest, int64(len(data)), nil
}

// ErrTooLarge marks an artifact over the size limit.
var ErrTooLarge = errors.New("too large")

// HasArtifact reports whether digest is stored.
func (r *Registry) HasArtifact(ctx context.Context, digest string) (bool, error) {
	if !validDigest(digest) {
		return false, fmt.Errorf("digest %q is not of the form sha256:<64 hex digits>", digest)
	}
	_, err := r.obj.GetInfo(ctx, objName(digest))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Artifact returns the code with digest, from the local cache when it has it.
func (r *Registry) Artifact(ctx context.Context, digest string) ([]byte, error) {
	if !validDigest(digest) {
		return nil, fmt.Errorf("digest %q is not of the form sha256:<64 hex digits>", digest)
	}
	if p := r.cachePath(digest); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			sum := sha256.Sum256(b)
			if "sha256:"+hex.EncodeToString(sum[:]) == digest {
				return b, nil
			}
		}
	}
	b, err := r.obj.GetBytes(ctx, objName(digest))
	if err != nil {
		return nil, fmt.Errorf("registry: artifact %s: %w", digest, err)
	}
	r.cacheArtifact(digest, b)
	return b, nil
}

func (r *Registry) cachePath(digest string) string {
	if r.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(r.cfg.CacheDir, strings.TrimPrefix(digest, "sha256:"))
}

func (r *Registry) cacheArtifact(digest string, data []byte) {
	p := r.cachePath(digest)
	if p == "" {
		return
	}
	if _, err := os.Stat(p); err == nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp := p + ".tmp" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return
	}
	_ = os.Rename(tmp, p)
}

func objName(digest string) string { return strings.Replace(digest, ":", "-", 1) }

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}
