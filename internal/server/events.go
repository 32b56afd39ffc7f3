package server

import (
	"context"
	"net/http"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/tenant"
	"github.com/nimbusfn/nimbus/internal/triggers"
)

// startEvents starts async invocation and the triggers, and mounts their routes.
func (s *Server) startEvents(ctx context.Context, mux *http.ServeMux) error {
	s.Async = async.New(async.Config{Bus: s.Bus, Invoker: s.Invoker, Node: s.cfg.Node, Logger: s.cfg.Logger, CallbackLoopback: s.cfg.CallbackLoopback})
	if err := s.Async.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Async.Stop)
	s.Triggers = triggers.New(triggers.Config{Bus: s.Bus, Invoker: s.Invoker, Async: s.Async, Logger: s.cfg.Logger, Node: s.cfg.Node})
	if err := s.Triggers.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Triggers.Stop) // stops before async (reverse order)
	s.Triggers.SetAuthorize(func(r *http.Request, v *registry.Version) error { return s.authorizeCall(r, v.Tenant, v, nil) })
	s.Async.Routes(mux, tenantOf)
	s.Triggers.Routes(mux, tenantOf)
	mux.Handle("/", s.Triggers.Handler()) // custom routes: the fallback for unmatched paths
	return nil
}

// protectEvents guards the event entry points that are not under /api/:
// POST /async/{name} applies the function's own auth mode, exactly as /fn/
// does; POST /events/{topic} needs an API key with the invoke scope (or
// loopback).
func (s *Server) protectEvents(next http.Handler) http.Handler {
	publish := s.Tenants.Middleware(tenant.Require(tenant.ScopeInvoke)(next), tenant.MiddlewareOptions{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/events/"):
			publish.ServeHTTP(w, r)
			return
		case strings.HasPrefix(r.URL.Path, "/async/"):
			rest := strings.TrimPrefix(r.URL.Path, "/async/")
			seg, _, _ := strings.Cut(rest, "/")
			name, qual, _ := strings.Cut(seg, "@")
			t, err := s.gatewayTenant(r, "", nil)
			if err != nil {
				apierr.Write(w, err)
				return
			}
			v, err := s.Invoker.Resolve(invoke.Target{Tenant: t, Function: name, Qualifier: qual})
			if err != nil {
				apierr.Write(w, err)
				return
			}
			if err := s.authorizeCall(r, t, v, nil); err != nil {
				apierr.Write(w, err)
				return
			}
			if t != registry.DefaultTenant {
				r = r.WithContext(tenant.WithPrincipal(r.Context(), tenant.NewPrincipal(t, "", []string{tenant.ScopeInvoke})))
			}
		}
		next.ServeHTTP(w, r)
	})
}
