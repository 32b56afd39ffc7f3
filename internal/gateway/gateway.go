// Package gateway is the data plane over HTTP: /fn/{name}[@qualifier][/path]
// invokes a function synchronously and answers with its response.
package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/telemetry"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// DefaultMaxBody is the synchronous payload limit (6 MB, as AWS Lambda).
const DefaultMaxBody = 6 << 20

// Invoker is what the gateway needs from the invoke pipeline.
type Invoker interface {
	// InvokeCall runs an invocation with its state (record and all) in c.
	InvokeCall(ctx context.Context, t invoke.Target, req *runtime.Request, w http.ResponseWriter, c *invoke.Call) error
	Resolve(t invoke.Target) (*registry.Version, error)
}

// Config wires a Gateway.
type Config struct {
	Invoker Invoker
	// MaxBody limits request bodies (default 6 MB).
	MaxBody int64
	// Tenant returns the tenant a request addresses: pathTenant when the URL
	// names one (/t/{tenant}/fn/…), else the caller's (default "default").
	// An error (a bad API key) is answered as is. The gateway passes the
	// request's own *Caller to Tenant and then to Authorize; other callers
	// of the same functions pass nil.
	Tenant func(r *http.Request, pathTenant string, c *Caller) (string, error)
	// Authorize checks the caller against the function's auth mode; nil = public.
	Authorize func(r *http.Request, tenant string, v *registry.Version, c *Caller) error
	// Tracer, when set, records a server span per invocation; the function
	// sees the span's traceparent either way.
	Tracer *telemetry.Tracer
}

// Caller is what the Tenant hook learned of a request's API key, kept for
// Authorize in the request's own state: one key check per request.
type Caller struct {
	// Checked is set once Key was checked: Principal is then its principal
	// (the key's own, read only), or Err says why it was refused.
	Checked   bool
	Key       string
	Principal *tenant.Principal
	Err       error
}

// Gateway serves /fn/….
type Gateway struct{ cfg Config }

// New builds a Gateway.
func New(cfg Config) *Gateway {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	return &Gateway{cfg: cfg}
}

// Prefix is the path prefix the gateway serves.
const Prefix = "/fn/"

// TenantPrefix addresses another tenant's functions: /t/{tenant}/fn/….
const TenantPrefix = "/t/"

// ParsePath splits "[/t/tenant]/fn/name@q/sub/path" into the tenant named in
// the path (or ""), the function name, qualifier, sub-path (always beginning
// with "/") and the script name (the prefix that named the function).
func ParsePath(p string) (tenant, name, qualifier, sub, script string, ok bool) {
	full := p // the script name is a prefix of it: no allocation
	prefix := 0
	if rest, found := strings.CutPrefix(p, TenantPrefix); found {
		tenant, p, _ = strings.Cut(rest, "/")
		prefix = len(TenantPrefix) + len(tenant)
		if len(full) > prefix {
			p = full[prefix:]
		} else {
			p = "/"
		}
	}
	rest, found := strings.CutPrefix(p, Prefix)
	if !found {
		return "", "", "", "", "", false
	}
	seg, sub, hasSub := strings.Cut(rest, "/")
	if hasSub {
		sub = rest[len(seg):]
	} else {
		sub = "/"
	}
	name, qualifier, _ = strings.Cut(seg, "@")
	script = full[:prefix+len(Prefix)+len(seg)]
	return tenant, name, qualifier, sub, script, name != ""
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pathTenant, name, qual, sub, script, ok := ParsePath(r.URL.Path)
	if !ok || !registry.ValidName(name) {
		apierr.Write(w, apierr.New(apierr.FunctionNotFound, "no function at %q: function URLs are [/t/TENANT]/fn/NAME[@VERSION|@ALIAS][/PATH]", r.URL.Path))
		return
	}
	// What one invocation needs, in one allocation.
	c := &call{body: limitedBody{r: r.Body, left: g.cfg.MaxBody}}
	tenant := pathTenant
	if g.cfg.Tenant != nil {
		var err error
		if tenant, err = g.cfg.Tenant(r, pathTenant, &c.caller); err != nil {
			apierr.Write(w, err)
			return
		}
	} else if tenant == "" {
		tenant = registry.DefaultTenant
	}
	t := invoke.Target{Tenant: tenant, Function: name, Qualifier: qual}
	if g.cfg.Authorize != nil {
		v, err := g.cfg.Invoker.Resolve(t)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		if err := g.cfg.Authorize(r, tenant, v, &c.caller); err != nil {
			apierr.Write(w, err)
			return
		}
	}
	if r.ContentLength > g.cfg.MaxBody {
		apierr.Write(w, tooLarge(g.cfg.MaxBody))
		return
	}
	body, req := &c.body, &c.req
	*req = runtime.Request{
		InvocationID: nuid.Next(), Method: r.Method, ScriptName: script,
		Path: sub, RawQuery: r.URL.RawQuery, Header: r.Header, Host: r.Host, RemoteAddr: r.RemoteAddr,
		Body: body, ContentLength: r.ContentLength, Trigger: "http",
	}
	c.id[0] = req.InvocationID
	w.Header()[invocationIDHeader] = c.id[:] // canonical already
	ctx := r.Context()
	var span *telemetry.Span
	if g.cfg.Tracer != nil {
		ctx, span = g.cfg.Tracer.StartServerSpan(ctx, "invoke "+name, r.Header,
			telemetry.String("faas.name", name), telemetry.String("faas.invocation_id", req.InvocationID))
		telemetry.Inject(ctx, r.Header)
	}
	err := g.cfg.Invoker.InvokeCall(ctx, t, req, w, &c.inv)
	if span != nil {
		if err != nil {
			span.Fail(err.Error())
		}
		span.End(telemetry.StatusOK)
	}
	if err != nil {
		if c.inv.Record.Status != 0 {
			return // the function already streamed part of its answer
		}
		if body.exceeded {
			apierr.Write(w, tooLarge(g.cfg.MaxBody))
			return
		}
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client went away
		}
		apierr.Write(w, invoke.HTTPError(name, err))
	}
}

// invocationIDHeader carries the invocation id to the caller (canonical form).
const invocationIDHeader = "X-Nimbus-Invocation-Id"

// call is the gateway's per-invocation state.
type call struct {
	req    runtime.Request
	body   limitedBody
	id     [1]string // the response header's value
	inv    invoke.Call
	caller Caller // the hooks' state
}

func tooLarge(limit int64) error {
	return apierr.New(apierr.PayloadTooLarge, "request body is over the %d-byte limit for synchronous invocations; send large data through object storage", limit)
}

// limitedBody fails reads past the limit and remembers that it did.
type limitedBody struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Check whether there is more.
		var one [1]byte
		n, err := b.r.Read(one[:])
		if n > 0 {
			b.exceeded = true
			return 0, errors.New("request body over the limit")
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
