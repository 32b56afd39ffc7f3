package s3

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
)

// TenantCredentials hands out a tenant's standing access key (KVCredentials
// does).
type TenantCredentials interface {
	ForTenant(ctx context.Context, tenant string) (Credentials, error)
}

// Routes mounts the S3 helpers of the control-plane REST API on mux:
//
//	GET /api/v1/objects-credentials  → {"access_key_id","secret_access_key"} of the caller's tenant
//	GET /api/v1/objects-presign?bucket=&key=&method=GET|PUT&expires=3600
//	                                 → {"url","method","expires_at"} signed against Config.S3URL
//
// tenantOf names the caller's tenant; an empty answer is refused with 401.
// Both need Config.Credentials to be a TenantCredentials (KVCredentials is).
func (s *Server) Routes(mux *http.ServeMux, tenantOf func(*http.Request) string) {
	mux.HandleFunc("GET /api/v1/objects-credentials", func(w http.ResponseWriter, r *http.Request) {
		tenant := tenantOf(r)
		if tenant == "" {
			apierr.Write(w, apierr.New(apierr.Unauthorized, "an API key is required"))
			return
		}
		cr, err := s.tenantCredentials(r.Context(), tenant)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(cr)
	})
	mux.HandleFunc("GET /api/v1/objects-presign", func(w http.ResponseWriter, r *http.Request) {
		tenant := tenantOf(r)
		if tenant == "" {
			apierr.Write(w, apierr.New(apierr.Unauthorized, "an API key is required"))
			return
		}
		q := r.URL.Query()
		bucket, key, method := q.Get("bucket"), q.Get("key"), q.Get("method")
		if method == "" {
			method = http.MethodGet
		}
		if method != http.MethodGet && method != http.MethodPut {
			apierr.Write(w, apierr.New(apierr.BadRequest, "method must be GET or PUT, not %q", method))
			return
		}
		if err := objects.CheckBucketName(bucket); err != nil {
			apierr.Write(w, objects.APIError(err))
			return
		}
		if err := objects.CheckKey(key); err != nil {
			apierr.Write(w, objects.APIError(err))
			return
		}
		expires := time.Hour
		if v := q.Get("expires"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > int(maxPresignExpiry/time.Second) {
				apierr.Write(w, apierr.New(apierr.BadRequest, "expires must be a number of seconds from 1 to 604800, not %q", v))
				return
			}
			expires = time.Duration(n) * time.Second
		}
		if s.cfg.S3URL == "" {
			apierr.Write(w, apierr.New(apierr.Unavailable, "the S3 API is not enabled on this server (start it with --s3-listen)"))
			return
		}
		cr, err := s.tenantCredentials(r.Context(), tenant)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		now := s.cfg.Now()
		u, err := Presign(method, s.cfg.S3URL, bucket, key, cr, s.cfg.Region, expires, now)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.Internal, "presigning: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"url": u, "method": method, "expires_at": now.Add(expires).UTC().Format(time.RFC3339)})
	})
}

func (s *Server) tenantCredentials(ctx context.Context, tenant string) (Credentials, error) {
	tc, ok := s.cfg.Credentials.(TenantCredentials)
	if !ok {
		return Credentials{}, apierr.New(apierr.Unavailable, "this server's credential store does not issue keys")
	}
	cr, err := tc.ForTenant(ctx, tenant)
	if err != nil {
		return Credentials{}, apierr.New(apierr.Internal, "%v", err)
	}
	return cr, nil
}
