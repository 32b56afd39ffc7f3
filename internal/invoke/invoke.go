// Package invoke is the invocation pipeline: resolve a target to a version
// through the in-memory registry, admit it against quotas, run it on a pooled
// instance of the right runtime, and record it (off the hot path).
package invoke

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/scaler"
)

// Target names what to invoke.
type Target struct {
	Tenant, Function string
	// Qualifier is "" (the live alias), an alias name, or a version number.
	Qualifier string
}

// LogSinks gives each version the sink its instances write their output to.
type LogSinks interface {
	Sink(tenant, function string, version int) runtime.LogSink
}

// Recorder receives each invocation's record; it must not block.
type Recorder interface {
	Record(rec *metering.Record)
}

// Admitter enforces per-tenant quotas at the moment of the call.
type Admitter interface {
	Admit(tenant string) (release func(), err error)
}

// Config wires an Invoker.
type Config struct {
	Registry *registry.Registry
	Runtimes map[string]runtime.Runtime
	Logs     LogSinks
	// Recorders each get every record (usage publisher, metrics).
	Recorders []Recorder
	Admitter  Admitter
	// Env returns extra environment for a version (secrets bound by name); may be nil.
	Env func(ctx context.Context, v *registry.Version) (map[string]string, error)
	// Host returns the host API offered to a version's instances; may be nil.
	Host   func(v *registry.Version) any
	Node   string
	Logger *slog.Logger
}

// Invoker runs invocations. It is safe for concurrent use.
type Invoker struct {
	cfg   Config
	log   *slog.Logger
	scale *scaler.Manager

	mu    sync.RWMutex
	pools map[poolKey]*versionPool
}

type poolKey struct {
	tenant, function string
	version          int
}

// versionPool is the pool of one version plus its lazily prepared template.
type versionPool struct {
	v    *registry.Version
	pool *scaler.Pool

	once sync.Mutex
	tmpl runtime.Template
}

// New builds an Invoker; Start begins pool housekeeping.
func New(cfg Config) *Invoker {
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	iv := &Invoker{cfg: cfg, log: l.With("component", "invoke"), scale: scaler.NewManager(time.Second), pools: map[poolKey]*versionPool{}}
	cfg.Registry.Watch(iv.onChange)
	return iv
}

// Start begins pool housekeeping (scale to zero, min instances) and warms
// the versions that keep instances at all times.
func (iv *Invoker) Start(ctx context.Context) error {
	if err := iv.scale.Start(ctx); err != nil {
		return err
	}
	iv.cfg.Registry.Each(func(f *registry.Function) { iv.warm(f.Tenant, f.Name) })
	return nil
}

// warm creates the pools of the versions a function's aliases name when they
// ask for warm instances (scale.min > 0), so they start without traffic.
func (iv *Invoker) warm(tenant, function string) {
	f, err := iv.cfg.Registry.Function(tenant, function)
	if err != nil {
		return
	}
	for _, a := range f.Aliases {
		for _, n := range []int{a.Version, a.Additional} {
			if n == 0 && a.Additional == 0 {
				n = f.Latest
			}
			if n == 0 {
				continue
			}
			if v, err := iv.cfg.Registry.Resolve(tenant, function, strconv.Itoa(n)); err == nil && v.Config.Scale.Min > 0 {
				iv.pool(v)
			}
		}
	}
}

// Stop closes every pool and instance.
func (iv *Invoker) Stop(ctx context.Context) error {
	err := iv.scale.Stop(ctx)
	iv.mu.Lock()
	pools := iv.pools
	iv.pools = map[poolKey]*versionPool{}
	iv.mu.Unlock()
	for _, vp := range pools {
		vp.close()
	}
	return err
}

// Resolve returns the version t names, or a 404 *apierr.Error.
func (iv *Invoker) Resolve(t Target) (*registry.Version, error) {
	v, err := iv.cfg.Registry.Resolve(t.Tenant, t.Function, t.Qualifier)
	if err != nil {
		return nil, resolveError(t, err)
	}
	return v, nil
}

func resolveError(t Target, err error) error {
	switch {
	case errors.Is(err, registry.ErrVersionNotFound):
		return apierr.New(apierr.VersionNotFound, "%s", err.Error())
	case errors.Is(err, registry.ErrNotFound):
		return apierr.New(apierr.FunctionNotFound, "no function named %q", t.Function)
	}
	return err
}

// Invoke runs one invocation of t and writes its response to w.
func (iv *Invoker) Invoke(ctx context.Context, t Target, req *runtime.Request, w http.ResponseWriter) (*metering.Record, error) {
	c := &Call{}
	if err := iv.InvokeCall(ctx, t, req, w, c); err != nil {
		if c.Record.ID == "" {
			return nil, err // not resolved: no record
		}
		return &c.Record, err
	}
	return &c.Record, nil
}

// Call is the state of one invocation that InvokeCall fills in, so that a
// caller can hold it in an allocation of its own.
type Call struct {
	// Record is the invocation's record, as the recorders got it (empty ID:
	// the target did not resolve).
	Record metering.Record
	sw     statusWriter
}

// InvokeCall is Invoke with the invocation's state in c (zero on entry).
func (iv *Invoker) InvokeCall(ctx context.Context, t Target, req *runtime.Request, w http.ResponseWriter, c *Call) error {
	v, err := iv.cfg.Registry.Resolve(t.Tenant, t.Function, t.Qualifier)
	if err != nil {
		return resolveError(t, err)
	}
	if req.InvocationID == "" {
		req.InvocationID = nuid.Next()
	}
	if req.Trigger == "" {
		req.Trigger = "http"
	}
	rec := &c.Record
	*rec = metering.Record{
		ID: req.InvocationID, Tenant: v.Tenant, Function: v.Function, Version: v.Number,
		Trigger: req.Trigger, MemoryMB: MemoryMB(v), Node: iv.cfg.Node,
	}
	if a := iv.cfg.Admitter; a != nil {
		release, err := a.Admit(v.Tenant)
		if err != nil {
			rec.Start = time.Now()
			rec.Outcome = "throttled"
			iv.record(rec)
			return err
		}
		defer release()
	}
	vp := iv.pool(v)
	lease, err := vp.pool.Acquire(ctx)
	for retry := 0; errors.Is(err, scaler.ErrClosed) && retry < 3; retry++ {
		// The version was redeployed or deleted while the request waited:
		// follow the registry to what the target names now.
		if v, err = iv.cfg.Registry.Resolve(t.Tenant, t.Function, t.Qualifier); err != nil {
			rec.ID = "" // no record was made
			return resolveError(t, err)
		}
		rec.Version = v.Number
		vp = iv.pool(v)
		lease, err = vp.pool.Acquire(ctx)
	}
	rec.Start = time.Now()
	if err != nil {
		rec.Outcome = outcomeOf(err)
		iv.record(rec)
		return err
	}
	rec.Cold, rec.InitNS = lease.Cold, int64(lease.Init)
	deadline := rec.Start.Add(Timeout(v))
	req.Deadline = deadline
	sw := &c.sw
	*sw = statusWriter{ResponseWriter: w}
	if _, ok := lease.Instance.(deadlineEnforcer); ok {
		err = lease.Instance.Invoke(ctx, req, sw)
	} else {
		ictx, cancel := context.WithDeadline(ctx, deadline)
		err = lease.Instance.Invoke(ictx, req, sw)
		cancel()
	}
	if err != nil && ctx.Err() == nil && !time.Now().Before(deadline) && runtime.KindOf(err) != runtime.TimedOut {
		err = &runtime.Error{Kind: runtime.TimedOut, Message: fmt.Sprintf("function %q did not finish within its %s timeout", v.Function, Timeout(v)), Err: err}
	}
	vp.pool.Release(lease, err)
	rec.DurationNS = int64(time.Since(rec.Start))
	rec.Status = sw.status
	if rec.Status == 0 && err == nil {
		rec.Status = http.StatusOK
	}
	rec.Outcome = outcomeOf(err)
	if err == nil && rec.Status >= 500 {
		rec.Outcome = "error"
	}
	iv.record(rec)
	return err
}

// deadlineEnforcer is an instance that ends a call at Request.Deadline by
// itself, so the call's context needs no deadline of its own (a timer and
// its context per call saved on the warm path).
type deadlineEnforcer interface{ EnforcesDeadline() }

func (iv *Invoker) record(rec *metering.Record) {
	for _, r := range iv.cfg.Recorders {
		r.Record(rec)
	}
}

func outcomeOf(err error) string {
	if err == nil {
		return "ok"
	}
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Code.Status == http.StatusTooManyRequests {
		return "throttled"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	switch k := runtime.KindOf(err); k {
	case runtime.FunctionError:
		return "error"
	default:
		return k.String()
	}
}

// pool returns the pool of v, creating it on first use.
func (iv *Invoker) pool(v *registry.Version) *versionPool {
	k := poolKey{v.Tenant, v.Function, v.Number}
	iv.mu.RLock()
	vp := iv.pools[k]
	iv.mu.RUnlock()
	if vp != nil {
		return vp
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if vp = iv.pools[k]; vp != nil {
		return vp
	}
	vp = &versionPool{v: v}
	vp.pool = scaler.NewPool(ScaleConfig(v), func(ctx context.Context) (runtime.Instance, error) {
		tmpl, err := iv.template(ctx, vp)
		if err != nil {
			return nil, err
		}
		return tmpl.NewInstance(ctx)
	}, iv.log.With("function", v.Function, "version", v.Number))
	iv.pools[k] = vp
	iv.scale.Add(vp.pool)
	return vp
}

// template prepares a version's code once (from the on-disk caches after a restart).
func (iv *Invoker) template(ctx context.Context, vp *versionPool) (runtime.Template, error) {
	vp.once.Lock()
	defer vp.once.Unlock()
	if vp.tmpl != nil {
		return vp.tmpl, nil
	}
	code, err := iv.cfg.Registry.Artifact(ctx, vp.v.Digest)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.StartFailed, Message: "fetching the function's code", Err: err}
	}
	tmpl, err := iv.Prepare(ctx, vp.v, code)
	if err != nil {
		return nil, err
	}
	vp.tmpl = tmpl
	return tmpl, nil
}

// Prepare validates and compiles code for v (which need not be stored yet).
func (iv *Invoker) Prepare(ctx context.Context, v *registry.Version, code []byte) (runtime.Template, error) {
	rt := iv.cfg.Runtimes[v.Config.Runtime]
	if rt == nil {
		return nil, &runtime.Error{Kind: runtime.BadCode, Message: fmt.Sprintf("runtime %q is not available on this server", v.Config.Runtime)}
	}
	spec, err := iv.spec(ctx, v)
	if err != nil {
		return nil, err
	}
	return rt.Prepare(ctx, spec, code)
}

// Adopt hands a template prepared at deploy time to v's pool, so the first
// invocation does not prepare again.
func (iv *Invoker) Adopt(v *registry.Version, tmpl runtime.Template) {
	vp := iv.pool(v)
	vp.once.Lock()
	if vp.tmpl == nil {
		vp.tmpl = tmpl
		tmpl = nil
	}
	vp.once.Unlock()
	if tmpl != nil {
		_ = tmpl.Close()
	}
}

func (iv *Invoker) spec(ctx context.Context, v *registry.Version) (*runtime.Spec, error) {
	env := make(map[string]string, len(v.Config.Env))
	for k, val := range v.Config.Env {
		env[k] = val
	}
	if iv.cfg.Env != nil {
		extra, err := iv.cfg.Env(ctx, v)
		if err != nil {
			return nil, &runtime.Error{Kind: runtime.StartFailed, Message: "resolving the function's secrets", Err: err}
		}
		for k, val := range extra {
			env[k] = val
		}
	}
	s := &runtime.Spec{
		Tenant: v.Tenant, Function: v.Function, Version: v.Number, Runtime: v.Config.Runtime,
		Digest: v.Digest, MemoryMB: MemoryMB(v), Timeout: Timeout(v), Env: env,
		Concurrency: ScaleConfig(v).Concurrency, Entry: v.Config.Entry, Handler: v.Config.Handler,
		Snapshot: v.Config.Snapshot == nil || *v.Config.Snapshot,
	}
	if iv.cfg.Logs != nil {
		s.Logs = iv.cfg.Logs.Sink(v.Tenant, v.Function, v.Number)
	}
	if iv.cfg.Host != nil {
		s.Host = iv.cfg.Host(v)
	}
	return s, nil
}

// onChange closes the pools of versions that nothing names any more.
func (iv *Invoker) onChange(ev registry.Event) {
	keep := map[int]bool{}
	if !ev.Deleted {
		if f, err := iv.cfg.Registry.Function(ev.Tenant, ev.Function); err == nil {
			keep[f.Latest] = true
			for _, a := range f.Aliases {
				keep[a.Version] = true
				keep[a.Additional] = true
			}
		}
	}
	iv.mu.Lock()
	var closing []*versionPool
	for k, vp := range iv.pools {
		if k.tenant == ev.Tenant && k.function == ev.Function && !keep[k.version] {
			if !ev.Deleted && vp.pool.Stats().InFlight > 0 {
				continue // pinned traffic still uses it; idle scale-down closes it later
			}
			delete(iv.pools, k)
			closing = append(closing, vp)
		}
	}
	iv.mu.Unlock()
	for _, vp := range closing {
		iv.scale.Remove(vp.pool)
		vp.close()
	}
	if !ev.Deleted {
		iv.warm(ev.Tenant, ev.Function)
	}
}

func (vp *versionPool) close() {
	vp.pool.Close()
	vp.once.Lock()
	if vp.tmpl != nil {
		_ = vp.tmpl.Close()
		vp.tmpl = nil
	}
	vp.once.Unlock()
}

// Stats reports the pool state of a function's versions on this node.
func (iv *Invoker) Stats(tenant, function string) map[int]scaler.Stats {
	iv.mu.RLock()
	defer iv.mu.RUnlock()
	out := map[int]scaler.Stats{}
	for k, vp := range iv.pools {
		if k.tenant == tenant && k.function == function {
			out[k.version] = vp.pool.Stats()
		}
	}
	return out
}

// PoolStat is one pool's state with its identity.
type PoolStat struct {
	Tenant, Function string
	Version          int
	scaler.Stats
}

// AllStats reports every pool on this node (for metrics).
func (iv *Invoker) AllStats() []PoolStat {
	iv.mu.RLock()
	defer iv.mu.RUnlock()
	out := make([]PoolStat, 0, len(iv.pools))
	for k, vp := range iv.pools {
		out = append(out, PoolStat{Tenant: k.tenant, Function: k.function, Version: k.version, Stats: vp.pool.Stats()})
	}
	return out
}
