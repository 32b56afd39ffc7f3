package server

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/baas/auth"
	"github.com/nimbusfn/nimbus/internal/gateway"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// startAccess starts tenants, API keys, secrets and end-user auth, and reads
// the admin key that the first start wrote.
func (s *Server) startAccess(ctx context.Context) error {
	s.checkSecretsKeyFile()
	ts, err := tenant.New(tenant.Config{
		Bus: s.Bus, DataDir: s.cfg.DataDir, SecretsKey: s.cfg.SecretsKey, AllowLoopbackAdmin: true, Logger: s.cfg.Logger,
		BeforeDeleteTenant: func(ctx context.Context, name string) error {
			if n := s.Registry.Count(name); n > 0 {
				return apierr.New(apierr.Conflict, "tenant %q still has %d functions: remove them first", name, n)
			}
			if s.Auth != nil {
				return s.Auth.DeleteTenant(ctx, name)
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	if err := ts.Start(ctx); err != nil {
		return err
	}
	s.onStop(ts.Stop)
	keyFile, err := ts.Bootstrap(ctx, s.cfg.DataDir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	s.adminKey = strings.TrimSpace(string(b))
	s.Tenants = ts

	kek, err := ts.DeriveKey("auth-signing-keys")
	if err != nil {
		return err
	}
	as, err := auth.New(auth.Config{Bus: s.Bus, Tenants: ts, KeyEncryptionKey: kek, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	if err := as.Start(ctx); err != nil {
		return err
	}
	s.onStop(as.Stop)
	s.Auth = as
	return nil
}

// checkSecretsKeyFile warns when the secrets key comes from the config but
// the data directory holds a different, generated one: the secrets stored
// under that one (before the key was configured) cannot be read any more.
func (s *Server) checkSecretsKeyFile() {
	if s.cfg.SecretsKey == nil {
		return
	}
	p := filepath.Join(s.cfg.DataDir, "secrets.key")
	if old, err := os.ReadFile(p); err == nil && !bytes.Equal(old, s.cfg.SecretsKey) {
		s.log.Warn("the configured secrets key differs from the data directory's secrets.key: secrets set under that file's key cannot be read; configure that key instead (base64 < secrets.key) or set them again", "file", p)
	}
}

// tenantOf is the tenant an authenticated API request acts for.
func tenantOf(r *http.Request) string {
	if p := tenant.FromContext(r.Context()); p != nil {
		return p.Tenant
	}
	return registry.DefaultTenant
}

// protectAPI authenticates every /api/ request and checks its scope by
// method: reads need "read", writes "deploy" (admin holds every scope).
// Routes with stricter needs (tenants, keys) check again themselves.
func (s *Server) protectAPI(next http.Handler) http.Handler {
	read := tenant.Require(tenant.ScopeRead)(next)
	write := tenant.Require(tenant.ScopeDeploy)(next)
	scoped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			read.ServeHTTP(w, r)
		default:
			write.ServeHTTP(w, r)
		}
	})
	api := s.Tenants.Middleware(scoped, tenant.MiddlewareOptions{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			api.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// gatewayTenant decides whose function a data-plane request names: the
// tenant in the path (/t/{tenant}/fn/…), else the tenant of the API key it
// carries, else the default tenant.
//
// A valid API key of another tenant (not an admin key) naming a function in
// the path is answered exactly as a function that does not exist — whether
// it exists, under any alias or version, and whatever its auth mode — except
// a public function, which answers everyone, key or not (a caller without a
// key learns the same). A key sees only its own tenant's other functions.
//
// The gateway passes its per-request caller state in c (see checkKey).
func (s *Server) gatewayTenant(r *http.Request, pathTenant string, c *gateway.Caller) (string, error) {
	if pathTenant != "" {
		if k := apiKeyOf(r); k != "" {
			if p, err := s.checkKey(r, k, c); err == nil && p.Tenant != pathTenant && !p.IsAdmin() {
				_, name, qual, _, _, _ := gateway.ParsePath(r.URL.Path)
				v, err := s.Invoker.Resolve(invoke.Target{Tenant: pathTenant, Function: name, Qualifier: qual})
				if err != nil || (v.Config.Auth != "" && v.Config.Auth != "public") {
					return "", apierr.New(apierr.FunctionNotFound, "no function named %q", name)
				}
			}
		}
		return pathTenant, nil
	}
	if k := apiKeyOf(r); k != "" {
		p, err := s.checkKey(r, k, c)
		if err != nil {
			return "", apierr.New(apierr.Unauthorized, "invalid API key")
		}
		return p.Tenant, nil
	}
	return registry.DefaultTenant, nil
}

// checkKey checks the API key k of r; the principal it returns must only be
// read. With the gateway's caller state c, the verdict is kept there, so
// that the gateway's two hooks check a request's key once; with nil, the
// key is checked each time.
func (s *Server) checkKey(r *http.Request, k string, c *gateway.Caller) (*tenant.Principal, error) {
	if c == nil {
		return s.Tenants.KeyPrincipal(r.Context(), k)
	}
	if !c.Checked || c.Key != k {
		p, err := s.Tenants.KeyPrincipal(r.Context(), k)
		*c = gateway.Caller{Checked: true, Key: k, Principal: p, Err: err}
	}
	return c.Principal, c.Err
}

// stripAPIKey removes the Nimbus API key a request carries, leaving any
// other Authorization (a user's token) in place.
func stripAPIKey(r *http.Request) {
	if apiKeyOf(r) == "" {
		return
	}
	r.Header.Del("X-Api-Key")
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.HasPrefix(strings.TrimSpace(h[7:]), tenant.KeyPrefix) {
		r.Header.Del("Authorization")
	}
}

// apiKeyOf returns the Nimbus API key a request carries (not a user's JWT).
func apiKeyOf(r *http.Request) string {
	if k := r.Header.Get("X-Api-Key"); k != "" {
		return k
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		if k := strings.TrimSpace(h[7:]); strings.HasPrefix(k, tenant.KeyPrefix) {
			return k
		}
	}
	return ""
}

// authorizeCall applies a function's auth mode: public (anyone), key (an API
// key of the function's tenant with the invoke scope) or user (a valid
// end-user token of the tenant; the function receives the verified user).
//
// The gateway passes its per-request caller state in c (see checkKey).
func (s *Server) authorizeCall(r *http.Request, tenantName string, v *registry.Version, c *gateway.Caller) error {
	auth.SetUserHeaders(r.Header, nil) // never trust incoming user headers
	// The caller's Nimbus API key never reaches function code (an admin
	// key calling a tenant's function would otherwise hand it over).
	defer stripAPIKey(r)
	switch v.Config.Auth {
	case "", "public":
		return nil
	case "key":
		k := apiKeyOf(r)
		if k == "" {
			return apierr.New(apierr.Unauthorized, "function %q needs an API key with the invoke scope: send Authorization: Bearer <key>", v.Function)
		}
		p, err := s.checkKey(r, k, c)
		if err != nil {
			return apierr.New(apierr.Unauthorized, "invalid API key")
		}
		if p.Tenant != tenantName && !p.IsAdmin() {
			return apierr.New(apierr.FunctionNotFound, "no function named %q", v.Function)
		}
		if !p.Can(tenant.ScopeInvoke) {
			return apierr.New(apierr.Forbidden, "this API key lacks the %q scope", tenant.ScopeInvoke)
		}
		return nil
	case "user":
		u, err := s.Auth.Verify(r.Context(), tenantName, r.Header.Get("Authorization"))
		if err != nil {
			return apierr.New(apierr.Unauthorized, "function %q needs a signed-in user: send Authorization: Bearer <access token from /auth/%s/login>", v.Function, tenantName)
		}
		auth.SetUserHeaders(r.Header, u)
		return nil
	}
	return apierr.New(apierr.Forbidden, "function %q has an unknown auth mode %q", v.Function, v.Config.Auth)
}
