package server

import (
	"context"
	"crypto/rand"

	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// startHostAPI offers functions the platform services (kv, objects, publish,
// secrets, log, outbound HTTP), each call confined to the function's tenant.
// It is published through an atomic pointer because the invoker exists before
// the services it exposes have started.
func (s *Server) startHostAPI() {
	s.hostAPI.Store(hostapi.New(hostapi.Services{
		KV: s.KV, Objects: s.Objects,
		Publish: func(ctx context.Context, tenant, topic string, data []byte, ceType string) error {
			return s.Triggers.PublishData(ctx, tenant, topic, ceType, "nimbus:function", rand.Text(), data)
		},
		Secrets: s.Tenants.Secrets().Resolve,
		Logs:    func(v *registry.Version) hostapi.LogSink { return s.Logs.Sink(v.Tenant, v.Function, v.Number) },
		Logger:  s.cfg.Logger,
	}))
}
