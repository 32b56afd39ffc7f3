package server

import (
	"context"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// secretEnv delivers the secrets a version names as environment variables
// (resolved when its instances are prepared; never stored with the version).
func (s *Server) secretEnv(ctx context.Context, v *registry.Version) (map[string]string, error) {
	if len(v.Config.Secrets) == 0 {
		return nil, nil
	}
	return s.Tenants.Secrets().Resolve(ctx, v.Tenant, v.Config.Secrets)
}

// redactors keeps one secret redactor per tenant for captured function
// output, refreshed at most every few seconds (log publishing runs off the
// hot path, so a refresh never delays an invocation).
type redactors struct {
	ts *tenant.Service
	mu sync.Mutex
	m  map[string]redactorEntry
}

type redactorEntry struct {
	r  *tenant.Redactor
	at time.Time
}

const redactorTTL = 5 * time.Second

func newRedactors(ts *tenant.Service) *redactors {
	return &redactors{ts: ts, m: map[string]redactorEntry{}}
}

func (rs *redactors) redact(tenantName string, line []byte) []byte {
	rs.mu.Lock()
	e, ok := rs.m[tenantName]
	rs.mu.Unlock()
	if !ok || time.Since(e.at) > redactorTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := rs.ts.Secrets().Redactor(ctx, tenantName)
		cancel()
		if err == nil {
			e = redactorEntry{r: r, at: time.Now()}
			rs.mu.Lock()
			rs.m[tenantName] = e
			rs.mu.Unlock()
		}
	}
	if e.r.Empty() {
		return line
	}
	return e.r.Redact(line)
}
