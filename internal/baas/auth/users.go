package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// MaxClaimsSize bounds a user's custom claims (as JSON), since they ride in
// every access token.
const MaxClaimsSize = 4 << 10

// Users lists a tenant's users, sorted by email.
func (s *Service) Users(ctx context.Context, tenantName string) ([]UserInfo, error) {
	w, err := s.kv.Watch(ctx, "u."+tenantName+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing users of tenant %q: %w", tenantName, err)
	}
	defer w.Stop()
	out := []UserInfo{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing users of tenant %q: watch closed", tenantName)
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Email < out[j].Email })
				return out, nil
			}
			var u userRecord
			if json.Unmarshal(e.Value(), &u) == nil {
				out = append(out, u.info())
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// DeleteUser removes a user; its sessions stop refreshing at once and its
// access tokens expire within AccessTTL.
func (s *Service) DeleteUser(ctx context.Context, tenantName, id string) error {
	u, _, err := s.user(ctx, tenantName, id)
	if err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, emailKey(tenantName, u.Email)); err != nil {
		return fmt.Errorf("deleting user %q of tenant %q: %w", id, tenantName, err)
	}
	if err := s.kv.Purge(ctx, userKey(tenantName, id)); err != nil {
		return fmt.Errorf("deleting user %q of tenant %q: %w", id, tenantName, err)
	}
	return nil
}

// SetClaims replaces a user's custom claims (they appear in access tokens
// issued from now on). Registered claim names are refused.
func (s *Service) SetClaims(ctx context.Context, tenantName, id string, claims map[string]any) (UserInfo, error) {
	for k := range claims {
		if reservedClaims[k] {
			return UserInfo{}, &badInput{fmt.Sprintf("claim %q is set by Nimbus and cannot be custom", k)}
		}
	}
	if b, _ := json.Marshal(claims); len(b) > MaxClaimsSize {
		return UserInfo{}, &badInput{fmt.Sprintf("claims are %d bytes of JSON; the limit is %d", len(b), MaxClaimsSize)}
	}
	u, rev, err := s.user(ctx, tenantName, id)
	if err != nil {
		return UserInfo{}, err
	}
	u.Claims, u.Updated = claims, time.Now().UTC()
	b, _ := json.Marshal(u)
	if _, err := s.kv.Update(ctx, userKey(tenantName, id), b, rev); err != nil {
		return UserInfo{}, fmt.Errorf("updating user %q of tenant %q (changed concurrently? retry): %w", id, tenantName, err)
	}
	return u.info(), nil
}

// APIAuth authenticates control-plane requests; *tenant.Service satisfies it.
type APIAuth interface {
	Middleware(next http.Handler, opts tenant.MiddlewareOptions) http.Handler
}

// AdminRoutes mounts the operator's view of app users, scoped to the
// caller's tenant (an admin may name another with ?tenant=):
// GET /api/v1/users (read), DELETE /api/v1/users/{id} and
// PUT /api/v1/users/{id}/claims (deploy).
func (s *Service) AdminRoutes(mux *http.ServeMux, api APIAuth) {
	h := func(pattern, scope string, f http.HandlerFunc) {
		mux.Handle(pattern, api.Middleware(tenant.Require(scope)(f), tenant.MiddlewareOptions{}))
	}
	h("GET /api/v1/users", tenant.ScopeRead, func(w http.ResponseWriter, r *http.Request) {
		list, err := s.Users(r.Context(), tenant.FromContext(r.Context()).Tenant)
		if err != nil {
			s.writeErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"users": list})
	})
	h("DELETE /api/v1/users/{id}", tenant.ScopeDeploy, func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteUser(r.Context(), tenant.FromContext(r.Context()).Tenant, r.PathValue("id")); err != nil {
			s.writeAdminErr(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	h("PUT /api/v1/users/{id}/claims", tenant.ScopeDeploy, func(w http.ResponseWriter, r *http.Request) {
		var claims map[string]any
		if err := decodeAny(w, r, &claims); err != nil {
			apierr.Write(w, err)
			return
		}
		u, err := s.SetClaims(r.Context(), tenant.FromContext(r.Context()).Tenant, r.PathValue("id"), claims)
		if err != nil {
			s.writeAdminErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, u)
	})
}

func (s *Service) writeAdminErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUserNotFound) {
		apierr.Write(w, apierr.New(apierr.NotFound, "user %q not found", r.PathValue("id")))
		return
	}
	s.writeErr(w, r, err)
}

// decodeAny decodes a JSON body without the unknown-field check (claims are free-form).
func decodeAny(w http.ResponseWriter, r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v); err != nil {
		return apierr.New(apierr.BadRequest, "request body must be a JSON object of claims: %v", err)
	}
	return nil
}

// DeleteTenant removes every user, session, reset token and signing key of
// a tenant (wire it into the tenant service's BeforeDeleteTenant).
func (s *Service) DeleteTenant(ctx context.Context, tenantName string) error {
	for _, b := range []struct {
		kv       jetstream.KeyValue
		prefixes []string
	}{
		{s.kv, []string{"u." + tenantName + ".>", "e." + tenantName + ".>", signingKeyKey(tenantName)}},
		{s.tokens, []string{"f." + tenantName + ".>", "p." + tenantName + ".>"}},
	} {
		l, err := b.kv.ListKeysFiltered(ctx, b.prefixes...)
		if err != nil {
			return fmt.Errorf("deleting the users of tenant %q: %w", tenantName, err)
		}
		var keys []string
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		_ = l.Stop()
		for _, k := range keys {
			if err := b.kv.Purge(ctx, k); err != nil {
				return fmt.Errorf("deleting the users of tenant %q: %w", tenantName, err)
			}
		}
	}
	s.kc.m.Delete(tenantName)
	s.forgetTenantTokens(tenantName)
	return nil
}
