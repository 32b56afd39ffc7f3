// Package server wires Nimbus's components from a Config, owns the HTTP
// listener, and starts and stops everything in order (graceful stop lets
// in-flight requests finish).
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/api"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/baas/auth"
	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/gateway"
	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/lambda"
	"github.com/nimbusfn/nimbus/internal/runtime/process"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
	"github.com/nimbusfn/nimbus/internal/runtime/wasm"
	"github.com/nimbusfn/nimbus/internal/telemetry"
	"github.com/nimbusfn/nimbus/internal/tenant"
	"github.com/nimbusfn/nimbus/internal/triggers"
)

// Version is the Nimbus release.
const Version = "0.1.0"

// Config is everything the server can be told.
type Config struct {
	// Listen is the HTTP address (default 127.0.0.1:8080; port 0 picks one).
	Listen string
	// DataDir holds JetStream's store, caches and keys (default ./.nimbus).
	DataDir string
	// NATSURL connects to an external NATS cluster instead of embedding one.
	NATSURL string
	// NATSListen opens the embedded server's client port.
	NATSListen string
	// ClusterListen and ClusterRoutes form a cluster of embedded servers.
	ClusterListen string
	ClusterRoutes []string
	// MQTTListen opens an MQTT 3.1.1 listener.
	MQTTListen string
	// CacheDir holds compiled code and unpacked artifacts (default DataDir/cache).
	CacheDir string
	// S3Listen opens the S3-compatible API.
	S3Listen string
	// Node names this server (default: host name).
	Node string
	// MaxBody limits synchronous request bodies (default 6 MB).
	MaxBody int64
	// Tracing exports traces over OTLP/HTTP when Tracing.Endpoint or
	// Tracing.TracesURL is set (see telemetry.TracingConfig; the server
	// fills ServiceName "nimbus" when empty, and Logger when nil).
	Tracing telemetry.TracingConfig
	// Prices turn usage into cost in usage reports; nil means
	// metering.DefaultPrices (AWS Lambda's x86 list prices). A zero price
	// makes that part of usage free.
	Prices *metering.Prices
	// SecretsKey is the 32-byte key that encrypts secrets at rest. When nil
	// it is read from DataDir/secrets.key, generated there on first start.
	SecretsKey []byte
	// LogRetention keeps function logs this long (default 7 days).
	LogRetention time.Duration
	// NoMetering drops invocation records instead of publishing them as usage
	// and counting them in /metrics (quotas still apply). It exists to
	// measure what metering costs (go run ./bench -suite overhead); a server
	// that bills must leave it off.
	NoMetering bool
	// CallbackLoopback lets async result callbacks reach loopback and
	// link-local addresses (refused by default; see async.Config).
	CallbackLoopback bool
	Logger           *slog.Logger
}

// Server is a running Nimbus.
type Server struct {
	cfg Config
	log *slog.Logger

	Bus       *bus.Bus
	Registry  *registry.Registry
	Invoker   *invoke.Invoker
	Logs      *telemetry.Logs
	Tenants   *tenant.Service
	Metrics   *telemetry.Metrics
	Meter     *metering.Meter
	Quotas    *metering.Quotas
	Tracer    *telemetry.Tracer
	KV        *kv.Service
	Objects   *objects.Service
	s3Addr    string
	Async     *async.Service
	hostAPI   atomic.Pointer[hostapi.Factory]
	Triggers  *triggers.Service
	publisher *metering.Publisher
	Auth      *auth.Service
	wasm      *wasm.Runtime

	mux      *http.ServeMux
	http     *http.Server
	ln       net.Listener
	adminKey string
	ready    atomic.Bool
	stops    []func(context.Context) error // in start order; run in reverse
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.SecretsKey = bytes.Clone(cfg.SecretsKey)
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = ".nimbus"
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %q: %w", cfg.DataDir, err)
	}
	cfg.DataDir = abs
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(cfg.DataDir, "cache")
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "server")}, nil
}

// check refuses the values that no default can stand in for, saying what
// to use instead.
func (c *Config) check() error {
	tr := c.Tracing
	for _, u := range []struct{ name, url, example string }{
		{"tracing endpoint", tr.Endpoint, "http://collector:4318"},
		{"tracing traces URL", tr.TracesURL, "http://collector:4318/v1/traces"},
	} {
		if u.url != "" && !httpURL(u.url) {
			return fmt.Errorf("%s %q: use an http:// or https:// URL such as %s", u.name, u.url, u.example)
		}
	}
	if err := telemetry.CheckProtocol(tr.Protocol); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	if r := tr.SampleRatio; !(r >= 0 && r <= 1) {
		return fmt.Errorf("tracing sample ratio %v: use a number from 0 to 1 (0 and 1 both record every trace)", r)
	}
	if c.Prices != nil {
		if err := c.Prices.Check(); err != nil {
			return err
		}
	}
	if c.SecretsKey != nil && len(c.SecretsKey) != 32 {
		return fmt.Errorf("secrets key of %d bytes: it must be 32 bytes (tenant.ParseSecretsKey reads 64 hex digits or base64)", len(c.SecretsKey))
	}
	return nil
}

// httpURL reports whether s is an absolute http or https URL with a host.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Addr is the HTTP address the server listens on (after Start).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL (after Start).
func (s *Server) URL() string { return "http://" + s.Addr() }

// AdminKey is the admin API key (written to DataDir/admin.key).
func (s *Server) AdminKey() string { return s.adminKey }

// Handler is the handler the server's listener serves (after Start), for
// in-process benchmarks and tests.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// DataDir is the absolute data directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

func (s *Server) onStop(f func(context.Context) error) { s.stops = append(s.stops, f) }

// Start brings every component up and begins serving. On error, whatever
// started is stopped again.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = s.Stop(context.Background())
		}
	}()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	s.ln, err = net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	s.onStop(func(context.Context) error { return s.ln.Close() })

	s.Bus, err = bus.Open(ctx, bus.Config{
		Dir: s.cfg.DataDir, URL: s.cfg.NATSURL, Listen: s.cfg.NATSListen, ClusterListen: s.cfg.ClusterListen,
		ClusterRoutes: s.cfg.ClusterRoutes, ServerName: s.cfg.Node, MQTTListen: s.cfg.MQTTListen, Logger: s.cfg.Logger,
	})
	if err != nil {
		return err
	}
	s.onStop(func(context.Context) error { return s.Bus.Close() })

	s.Registry = registry.New(registry.Options{Bus: s.Bus, CacheDir: filepath.Join(s.cfg.CacheDir, "artifacts"), Logger: s.cfg.Logger})
	if err := s.Registry.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Registry.Stop)

	if err := s.startAccess(ctx); err != nil {
		return err
	}

	s.Logs = telemetry.NewLogs(telemetry.LogsConfig{Bus: s.Bus, Retention: s.cfg.LogRetention, Logger: s.cfg.Logger})
	if err := s.Logs.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Logs.Stop)
	s.Logs.SetRedactor(newRedactors(s.Tenants).redact)

	if err := s.startMetering(ctx); err != nil {
		return err
	}

	runtimes, names, err := s.runtimes(ctx)
	if err != nil {
		return err
	}
	s.Invoker = invoke.New(invoke.Config{
		Registry: s.Registry, Runtimes: runtimes, Logs: s.Logs, Node: s.cfg.Node, Logger: s.cfg.Logger,
		Env: s.secretEnv, Recorders: s.recorders(), Admitter: s.Quotas,
		Host: func(v *registry.Version) any {
			if f := s.hostAPI.Load(); f != nil {
				return f.For(v)
			}
			return nil
		},
	})
	// After the invoker stopped every instance: no spare cgroup outlives a
	// clean stop (stops run last first).
	s.onStop(func(context.Context) error { sandbox.ReleaseIdle(); return nil })
	s.onStop(s.Invoker.Stop)

	s.mux = http.NewServeMux()
	gw := gateway.New(gateway.Config{Invoker: s.Invoker, MaxBody: s.cfg.MaxBody, Tenant: s.gatewayTenant, Authorize: s.authorizeCall, Tracer: s.Tracer})
	s.mux.Handle(gateway.Prefix, gw)
	s.mux.Handle(gateway.TenantPrefix, gw)
	s.Tenants.Routes(s.mux)
	s.Auth.Routes(s.mux)
	s.Auth.AdminRoutes(s.mux, s.Tenants)
	api.New(api.Config{
		Registry: s.Registry, Invoker: s.Invoker, Logs: s.Logs, Detect: wasm.Detect, TenantOf: tenantOf, Before: s.beforeDeploy,
		BaseURL: func(r *http.Request) string { return "http://" + r.Host },
		Version: Version, Node: s.cfg.Node, Runtimes: names, Logger: s.cfg.Logger,
	}).Routes(s.mux)
	s.observeRoutes(s.mux)
	if err := s.startStorage(ctx, s.mux); err != nil {
		return err
	}
	if err := s.startEvents(ctx, s.mux); err != nil {
		return err
	}
	s.startHostAPI()
	// Pools start (and warm scale.min instances) only now, so that every
	// instance gets the host API.
	if err := s.Invoker.Start(ctx); err != nil {
		return err
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})

	s.http = &http.Server{
		Handler:           routeGateway(gw, s.protectAPI(s.protectEvents(s.mux))),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.ready.Store(true)
	s.log.Info("nimbus is up", "url", s.URL(), "data", s.cfg.DataDir, "node", s.cfg.Node, "runtimes", names)
	return nil
}

// routeGateway sends a request for a function URL straight to the gateway,
// the hot path, and everything else to next. It gives the answer the mux
// would (every path under the gateway's prefixes is the gateway's, and
// neither the API nor the event middleware looks at them) without its
// pattern matching and per-request allocations. A path the mux would
// clean first (a redirect) still goes through it.
func routeGateway(gw, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; (strings.HasPrefix(p, gateway.Prefix) || strings.HasPrefix(p, gateway.TenantPrefix)) && r.Method != http.MethodConnect && cleanPath(p) {
			gw.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath reports whether p (beginning with "/") is what path.Clean makes of
// it, save a trailing slash: no empty, "." or ".." segment.
func cleanPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		rest := p[i+1:]
		switch {
		case strings.HasPrefix(rest, "/"),
			rest == ".", strings.HasPrefix(rest, "./"),
			rest == "..", strings.HasPrefix(rest, "../"):
			return false
		}
	}
	return true
}

// runtimes builds every runtime this server offers.
func (s *Server) runtimes(ctx context.Context) (map[string]runtime.Runtime, []string, error) {
	// The runtime outlives Start: never hand it Start's (cancelled) context.
	w, err := wasm.New(context.WithoutCancel(ctx), wasm.Config{CacheDir: filepath.Join(s.cfg.CacheDir, "wasm"), Logger: s.cfg.Logger})
	if err != nil {
		return nil, nil, err
	}
	s.wasm = w
	s.onStop(w.Close)
	rts := map[string]runtime.Runtime{runtime.Wasm: w, runtime.WasmCGI: w}
	names := []string{runtime.Wasm, runtime.WasmCGI}
	rts[runtime.Process] = process.New(process.Config{CacheDir: filepath.Join(s.cfg.CacheDir, "process"), Logger: s.cfg.Logger})
	names = append(names, runtime.Process)
	lam := lambda.New(lambda.Config{CacheDir: filepath.Join(s.cfg.CacheDir, "lambda"), Logger: s.cfg.Logger})
	for _, n := range []string{runtime.Lambda, runtime.Python3, runtime.NodeJS} {
		rts[n] = lam
		names = append(names, n)
	}
	s.log.Info("process isolation", "report", sandbox.Probe().String())
	return rts, names, nil
}

// Stop stops serving new requests, lets in-flight ones finish (bounded by
// ctx), then stops every component in reverse start order.
func (s *Server) Stop(ctx context.Context) error {
	s.ready.Store(false)
	var errs []error
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		s.http = nil
	}
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i](ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.stops = nil
	return errors.Join(errs...)
}
