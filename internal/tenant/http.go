package tenant

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// TenantHeader lets an admin key act on another tenant (as does ?tenant=).
const TenantHeader = "X-Nimbus-Tenant"

// LoopbackKeyID is the KeyID of a principal admitted as loopback admin.
const LoopbackKeyID = "loopback"

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the request's principal, or nil when it has none.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// MiddlewareOptions tune Middleware.
type MiddlewareOptions struct {
	// Anonymous lets requests that carry no key through without a principal
	// (for public functions). A key that is present must still be valid.
	Anonymous bool
}

// errUnauthorized is the one answer to every refused key: it does not say
// whether the key was malformed, unknown, revoked or expired.
func errUnauthorized() *apierr.Error {
	return apierr.New(apierr.Unauthorized, "missing or invalid API key: send Authorization: Bearer <key> (or X-Api-Key) with a valid, unrevoked, unexpired key")
}

// notFoundTenant is what a non-admin key hears about any tenant but its own,
// whether that tenant exists or not.
func notFoundTenant(name string) *apierr.Error {
	return apierr.New(apierr.NotFound, "tenant %q not found", name)
}

// bearerOf returns the API key a request carries, if any.
func bearerOf(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return h // not a bearer: Authenticate calls it malformed
	}
	return strings.TrimSpace(r.Header.Get("X-Api-Key"))
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Middleware authenticates the request's API key (Authorization: Bearer, or
// X-Api-Key) and puts its Principal in the request context. With
// AllowLoopbackAdmin, a request from 127.0.0.1/::1 with no key acts as the
// default tenant's admin. An admin may act on another tenant with ?tenant=
// or X-Nimbus-Tenant; any other key naming a tenant not its own gets 404.
// A request that already carries a principal passes through unchanged.
func (s *Service) Middleware(next http.Handler, opts MiddlewareOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if FromContext(r.Context()) != nil {
			next.ServeHTTP(w, r)
			return
		}
		var p *Principal
		if bearer := bearerOf(r); bearer != "" {
			var err error
			p, err = s.Authenticate(r.Context(), bearer)
			if err != nil {
				s.log.Debug("API key refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", err)
				apierr.Write(w, errUnauthorized())
				return
			}
		} else if s.cfg.AllowLoopbackAdmin && isLoopback(r.RemoteAddr) {
			p = NewPrincipal(DefaultTenant, LoopbackKeyID, []string{ScopeAdmin})
		} else if opts.Anonymous {
			next.ServeHTTP(w, r)
			return
		} else {
			apierr.Write(w, errUnauthorized())
			return
		}
		if t := requestedTenant(r); t != "" && t != p.Tenant {
			if !p.IsAdmin() || !s.Exists(t) {
				apierr.Write(w, notFoundTenant(t))
				return
			}
			p.Tenant = t
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// requestedTenant is the tenant a request names with X-Nimbus-Tenant or ?tenant=.
func requestedTenant(r *http.Request) string {
	if t := r.Header.Get(TenantHeader); t != "" {
		return t
	}
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get("tenant")
}

// Require lets a request through only when its principal holds scope:
// 401 without a principal, 403 without the scope.
func Require(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := FromContext(r.Context())
			if p == nil {
				apierr.Write(w, errUnauthorized())
				return
			}
			if !p.Can(scope) {
				apierr.Write(w, apierr.New(apierr.Forbidden, "this API key lacks the %q scope", scope))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Routes mounts the tenant, key and secret API under /api/v1. Every route
// authenticates with Middleware itself (a no-op when an outer Middleware ran).
func (s *Service) Routes(mux *http.ServeMux) {
	h := func(pattern, scope string, f http.HandlerFunc) {
		mux.Handle(pattern, s.Middleware(Require(scope)(f), MiddlewareOptions{}))
	}
	h("POST /api/v1/tenants", ScopeAdmin, s.handleCreateTenant)
	h("GET /api/v1/tenants", ScopeAdmin, s.handleListTenants)
	h("GET /api/v1/tenants/{name}", ScopeRead, s.handleGetTenant)
	h("PUT /api/v1/tenants/{name}/quotas", ScopeAdmin, s.handleSetQuotas)
	h("DELETE /api/v1/tenants/{name}", ScopeAdmin, s.handleDeleteTenant)
	h("POST /api/v1/keys", ScopeAdmin, s.handleCreateKey)
	h("GET /api/v1/keys", ScopeAdmin, s.handleListKeys)
	h("DELETE /api/v1/keys/{id}", ScopeAdmin, s.handleRevokeKey)
	h("PUT /api/v1/secrets/{name}", ScopeDeploy, s.handleSetSecret)
	h("GET /api/v1/secrets", ScopeRead, s.handleListSecrets)
	h("DELETE /api/v1/secrets/{name}", ScopeDeploy, s.handleDeleteSecret)
}

// maxBody bounds JSON request bodies (a 64 KB secret, JSON-escaped, fits).
const maxBody = 1 << 20

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apierr.New(apierr.PayloadTooLarge, "request body is larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return apierr.New(apierr.BadRequest, "request body is empty: send a JSON object")
		}
		return apierr.New(apierr.BadRequest, "request body is not valid JSON for this call: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr maps the service's errors onto the API catalog.
func (s *Service) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apierr.Error
	var bi *badInput
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &bi):
		code := apierr.BadRequest
		if bi.name {
			code = apierr.InvalidName
		}
		ae = apierr.New(code, "%s", err.Error())
	case errors.Is(err, ErrSecretName):
		ae = apierr.New(apierr.InvalidName, "%s", err.Error())
	case errors.Is(err, ErrTenantNotFound), errors.Is(err, ErrKeyNotFound), errors.Is(err, ErrSecretNotFound):
		ae = apierr.New(apierr.NotFound, "%s", err.Error())
	case errors.Is(err, ErrTenantExists):
		ae = apierr.New(apierr.Conflict, "%s", err.Error())
	case errors.Is(err, ErrDefaultTenant), errors.Is(err, ErrSecretTooLarge):
		ae = apierr.New(apierr.BadRequest, "%s", err.Error())
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = apierr.New(apierr.Internal, "internal error; see the server log")
	}
	apierr.Write(w, ae)
}

type tenantRequest struct {
	Name   string `json:"name"`
	Quotas Quotas `json:"quotas"`
}

func (s *Service) handleCreateTenant(w http.ResponseWriter, r *http.Request) {
	var in tenantRequest
	if err := decodeBody(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.CreateTenant(r.Context(), in.Name, in.Quotas)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Service) handleListTenants(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"tenants": s.Tenants()})
}

// visibleTenant resolves a tenant named in a path for p: admins see every
// tenant, others only their own (anything else is 404).
func (s *Service) visibleTenant(p *Principal, name string) (Tenant, error) {
	if !p.IsAdmin() && name != p.Tenant {
		return Tenant{}, notFoundTenant(name)
	}
	t, err := s.Tenant(name)
	if err != nil {
		return Tenant{}, notFoundTenant(name)
	}
	return t, nil
}

func (s *Service) handleGetTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.visibleTenant(FromContext(r.Context()), r.PathValue("name"))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Service) handleSetQuotas(w http.ResponseWriter, r *http.Request) {
	var q Quotas
	if err := decodeBody(w, r, &q); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.SetQuotas(r.Context(), r.PathValue("name"), q)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Service) handleDeleteTenant(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteTenant(r.Context(), r.PathValue("name")); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// keyCreateRequest is the body of POST /api/v1/keys.
type keyCreateRequest struct {
	Tenant string   `json:"tenant"`
	Scopes []string `json:"scopes"`
	// ExpiresIn is a duration ("720h", "30d") or a number of seconds.
	ExpiresIn json.RawMessage `json:"expires_in,omitempty"`
	Name      string          `json:"name"`
}

// CreatedKey is the answer to POST /api/v1/keys: the only time Key is shown.
type CreatedKey struct {
	APIKey
	Key string `json:"key"`
}

// ParseExpiry reads a lifetime: a Go duration ("720h"), whole days ("30d"),
// or a JSON number of seconds. Empty means no expiry.
func ParseExpiry(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var secs float64
	if json.Unmarshal(raw, &secs) == nil {
		return time.Duration(secs * float64(time.Second)), nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return 0, invalid("expires_in must be a duration like \"720h\" or \"30d\", or seconds")
	}
	return ParseDuration(str)
}

// ParseDuration is time.ParseDuration plus whole days ("30d").
func ParseDuration(str string) (time.Duration, error) {
	if str == "" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(str, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, invalid("duration %q: days must be a whole number, like \"30d\"", str)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(str)
	if err != nil {
		return 0, invalid("duration %q: use a duration like \"720h\" or \"30d\"", str)
	}
	return v, nil
}

func (s *Service) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	p := FromContext(r.Context())
	var in keyCreateRequest
	if err := decodeBody(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	if in.Tenant == "" {
		in.Tenant = p.Tenant
	}
	if !registry.ValidName(in.Tenant) {
		s.writeErr(w, r, &badInput{msg: registry.CheckName("tenant", in.Tenant).Error(), name: true})
		return
	}
	exp, err := ParseExpiry(in.ExpiresIn)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	full, k, err := s.CreateKey(r.Context(), KeyRequest{Tenant: in.Tenant, Scopes: in.Scopes, ExpiresIn: exp, Name: in.Name})
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, CreatedKey{APIKey: k, Key: full})
}

func (s *Service) handleListKeys(w http.ResponseWriter, r *http.Request) {
	tenant := ""
	if requestedTenant(r) != "" {
		tenant = FromContext(r.Context()).Tenant
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": s.Keys(tenant)})
}

func (s *Service) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := hex.DecodeString(id); err != nil || len(id) != keyIDLen {
		apierr.Write(w, apierr.New(apierr.NotFound, "API key %q not found (ids are 16 hex digits, as `nimbus key ls` shows)", id))
		return
	}
	k, err := s.RevokeKey(r.Context(), id)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

type secretRequest struct {
	Value *string `json:"value"`
}

func (s *Service) handleSetSecret(w http.ResponseWriter, r *http.Request) {
	var in secretRequest
	if err := decodeBody(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	if in.Value == nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, `send the secret as {"value": "…"}`))
		return
	}
	info, err := s.Secrets().Set(r.Context(), FromContext(r.Context()).Tenant, r.PathValue("name"), *in.Value)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Service) handleListSecrets(w http.ResponseWriter, r *http.Request) {
	list, err := s.Secrets().List(r.Context(), FromContext(r.Context()).Tenant)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"secrets": list})
}

func (s *Service) handleDeleteSecret(w http.ResponseWriter, r *http.Request) {
	if err := s.Secrets().Delete(r.Context(), FromContext(r.Context()).Tenant, r.PathValue("name")); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
