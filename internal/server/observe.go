package server

import (
	"context"
	"net/http"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/telemetry"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// startMetering starts the usage publisher, the meter, quotas, metrics and
// tracing. The invoker is built after this, with these as its recorders.
func (s *Server) startMetering(ctx context.Context) error {
	s.Metrics = telemetry.NewMetrics()
	s.publisher = metering.NewPublisher(metering.PublisherConfig{Bus: s.Bus, Node: s.cfg.Node, Logger: s.cfg.Logger})
	if err := s.publisher.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.publisher.Stop)
	s.Meter = metering.NewMeter(metering.MeterConfig{Bus: s.Bus, Prices: s.cfg.Prices, Logger: s.cfg.Logger})
	if err := s.Meter.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Meter.Stop)
	s.Quotas = metering.NewQuotas(func(t string) metering.Limits { return metering.Limits(s.Tenants.Quotas(t)) })
	s.Quotas.UseMeter(s.Meter)
	if tc := s.cfg.Tracing; tc.Endpoint != "" || tc.TracesURL != "" {
		if tc.ServiceName == "" {
			tc.ServiceName = "nimbus"
		}
		if tc.Logger == nil {
			tc.Logger = s.cfg.Logger
		}
		s.Tracer = telemetry.NewTracer(tc)
		if err := s.Tracer.Start(ctx); err != nil {
			return err
		}
		s.onStop(s.Tracer.Stop)
	}
	return nil
}

// recorders are the invoker's record sinks.
func (s *Server) recorders() []invoke.Recorder {
	if s.cfg.NoMetering {
		return nil
	}
	return []invoke.Recorder{s.publisher, s.Metrics}
}

// observeRoutes mounts /metrics, /api/v1/stats and /api/v1/usage.
func (s *Server) observeRoutes(mux *http.ServeMux) {
	s.Metrics.RegisterPools(func() []telemetry.PoolStat {
		all := s.Invoker.AllStats()
		out := make([]telemetry.PoolStat, len(all))
		for i, p := range all {
			out[i] = telemetry.PoolStat{Tenant: p.Tenant, Function: p.Function, Version: p.Version,
				Starting: p.Starting, Idle: p.Idle, Busy: p.Busy, Desired: p.Desired, InFlight: p.InFlight, Queued: p.Queued}
		}
		return out
	})
	metrics := s.Metrics.Handler()
	// Metrics name every tenant's functions: loopback or an admin key only.
	mux.Handle("GET /metrics", s.Tenants.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := tenant.FromContext(r.Context()); p == nil || !p.IsAdmin() {
			apierr.Write(w, apierr.New(apierr.Forbidden, "/metrics needs an admin API key"))
			return
		}
		metrics.ServeHTTP(w, r)
	}), tenant.MiddlewareOptions{}))
	mux.Handle("GET /api/v1/stats", s.Metrics.StatsHandler(tenantOf))
	s.Meter.Routes(mux, tenantOf, func(r *http.Request) bool {
		p := tenant.FromContext(r.Context())
		return p != nil && p.IsAdmin()
	})
	// Forget the series and sinks of deleted functions (bounded label sets).
	s.Registry.Watch(func(ev registry.Event) {
		if ev.Deleted {
			s.Metrics.Forget(ev.Tenant, ev.Function)
			s.Logs.Forget(ev.Tenant, ev.Function)
		}
	})
}

// beforeDeploy refuses a new function past the tenant's function quota.
func (s *Server) beforeDeploy(ctx context.Context, tenantName, function string) error {
	if _, err := s.Registry.Function(tenantName, function); err == nil {
		return nil // a new version of an existing function
	}
	return s.Quotas.CheckFunctions(tenantName, s.Registry.Count(tenantName))
}
