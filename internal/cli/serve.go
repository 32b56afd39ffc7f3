package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

func init() { register(newServeCmd) }

// serveFlags are the server's flags, shared by serve and dev.
type serveFlags struct {
	cfg            server.Config
	routes         string
	logLevel       string
	otlpEndpoint   string
	otlpProtocol   string
	otlpHeaders    []string
	sampleRatio    float64
	secretsKeyFile string
	prices         metering.Prices
	// changed reports whether a flag was given on the command line (the
	// command's FlagSet.Changed); a flag not given falls back to its
	// environment variable.
	changed func(name string) bool
	// getenv reads the environment: os.Getenv unless a test sets it.
	getenv func(string) string
}

func (f *serveFlags) add(c *cobra.Command, listen string) {
	fl := c.Flags()
	fl.StringVar(&f.cfg.Listen, "listen", listen, "HTTP address for functions and the API")
	fl.StringVar(&f.cfg.DataDir, "data", ".nimbus", "data directory (JetStream store, caches, keys)")
	fl.StringVar(&f.cfg.NATSURL, "nats-url", "", "use an external NATS cluster instead of the embedded server")
	fl.StringVar(&f.cfg.NATSListen, "nats-listen", "", "open the embedded NATS server's client port (host:port)")
	fl.StringVar(&f.cfg.ClusterListen, "cluster-listen", "", "cluster port of the embedded NATS server (host:port)")
	fl.StringVar(&f.routes, "cluster-routes", "", "comma-separated routes to other nodes (nats://a:6222,nats://b:6222)")
	fl.StringVar(&f.cfg.MQTTListen, "mqtt-listen", "", "open an MQTT 3.1.1 listener (host:port)")
	fl.StringVar(&f.cfg.S3Listen, "s3-listen", "", "open the S3-compatible API (host:port)")
	fl.StringVar(&f.cfg.Node, "node", "", "this node's name (default: host name)")
	fl.DurationVar(&f.cfg.LogRetention, "log-retention", 7*24*time.Hour, "how long function logs are kept")
	fl.StringVar(&f.logLevel, "log-level", "info", "server log level: debug, info, warn, error")
	fl.BoolVar(&f.cfg.CallbackLoopback, "callback-loopback", false, "let async result callbacks (X-Callback-Url, URL destinations) reach loopback and link-local addresses")
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "export traces over OTLP/HTTP to the collector at base `URL` (spans go to URL/v1/traces; env "+envOTLPEndpoint+", or "+envOTLPTracesEndpoint+" for the full URL)")
	fl.StringVar(&f.otlpProtocol, "otlp-protocol", telemetry.ProtocolProtobuf, "OTLP encoding, "+telemetry.ProtocolProtobuf+" or "+telemetry.ProtocolJSON+" (env "+envOTLPTracesProtocol+", then "+envOTLPProtocol+")")
	fl.StringArrayVar(&f.otlpHeaders, "otlp-header", nil, "header `key=value` sent with every trace export, repeatable (env "+envOTLPTracesHeaders+", then "+envOTLPHeaders+": k1=v1,k2=v2, values URL-encoded; give credentials there, flags show in ps)")
	fl.Float64Var(&f.sampleRatio, "trace-sample-ratio", 1, "share of new traces exported, 0 to 1; a request with a traceparent follows its caller (env "+envSamplerArg+" when "+envSampler+" is traceidratio or parentbased_traceidratio)")
	fl.Float64Var(&f.prices.PerMillionRequests, "price-per-million-requests", metering.DefaultPrices.PerMillionRequests, "`USD` per million requests in usage costs (0: free); the default is AWS Lambda's x86 list price")
	fl.Float64Var(&f.prices.PerGBSecond, "price-per-gb-second", metering.DefaultPrices.PerGBSecond, "`USD` per GB-second in usage costs (0: free); the default is AWS Lambda's x86 list price")
	// The help shows 0.0000166667, not pflag's 1.66667e-05.
	fl.Lookup("price-per-million-requests").DefValue = strconv.FormatFloat(metering.DefaultPrices.PerMillionRequests, 'f', -1, 64)
	fl.Lookup("price-per-gb-second").DefValue = strconv.FormatFloat(metering.DefaultPrices.PerGBSecond, 'f', -1, 64)
	fl.StringVar(&f.secretsKeyFile, "secrets-key-file", "", "read the key that encrypts secrets from `PATH` (64 hex digits or base64; or env "+envSecretsKey+" holds the key itself); without either, a key is generated into DATA/secrets.key")
	f.changed = fl.Changed
}

// config turns the flags, and the environment variables of the flags not
// given, into the server's Config. Every bad value is an error that names
// the flag or variable it came from and says what to use.
func (f *serveFlags) config(stderr io.Writer) (server.Config, error) {
	getenv := f.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := f.cfg
	if f.routes != "" {
		cfg.ClusterRoutes = strings.Split(f.routes, ",")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	var err error
	if cfg.Tracing, err = f.tracing(getenv); err != nil {
		return cfg, err
	}
	for _, p := range []struct {
		flag     string
		v, deflt float64
	}{
		{"price-per-million-requests", f.prices.PerMillionRequests, metering.DefaultPrices.PerMillionRequests},
		{"price-per-gb-second", f.prices.PerGBSecond, metering.DefaultPrices.PerGBSecond},
	} {
		if !metering.ValidPrice(p.v) {
			return cfg, fmt.Errorf("--%s %v: use a price in US dollars, 0 (free) or more (the default is %s)", p.flag, p.v, strconv.FormatFloat(p.deflt, 'f', -1, 64))
		}
	}
	prices := f.prices
	cfg.Prices = &prices
	if cfg.SecretsKey, err = f.secretsKey(getenv); err != nil {
		return cfg, err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, nil
}

func newServeCmd(app *App) *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the Nimbus server",
		Long: `Run the Nimbus server: functions at /fn/NAME, the API at /api/v1, health at /healthz and
/readyz. State lives in JetStream in the data directory (an embedded NATS server unless
--nats-url is given). SIGINT or SIGTERM stop it gracefully: in-flight requests finish.

Traces are exported over OTLP/HTTP when a collector is given, by --otlp-endpoint or the standard
OpenTelemetry variables (OTEL_EXPORTER_OTLP_ENDPOINT and the others named below); a flag given
wins over its variable. Usage reports price requests and GB-seconds at --price-per-* (AWS
Lambda's x86 list prices by default). Secrets are encrypted with a key from --secrets-key-file
or NIMBUS_SECRETS_KEY, or else one generated into the data directory: back that file up.`,
		Example: `  nimbus serve
  nimbus serve --listen 0.0.0.0:8080 --data /var/lib/nimbus
  nimbus serve --s3-listen 127.0.0.1:9000 --mqtt-listen 127.0.0.1:1883
  nimbus serve --otlp-endpoint http://127.0.0.1:4318 --trace-sample-ratio 0.1
  OTEL_EXPORTER_OTLP_HEADERS='authorization=Bearer%20TOKEN' nimbus serve --otlp-endpoint https://otlp.example.com
  nimbus serve --price-per-million-requests 0.25 --price-per-gb-second 0.00002
  nimbus serve --secrets-key-file /etc/nimbus/secrets.key   # openssl rand -hex 32 > /etc/nimbus/secrets.key`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := f.config(os.Stderr)
			if err != nil {
				return err
			}
			s, err := server.New(cfg)
			if err != nil {
				return err
			}
			return runServer(s, func(*server.Server) error {
				fmt.Fprintf(app.Stdout, "Nimbus %s listening on %s\n", server.Version, s.URL())
				return nil
			})
		},
	}
	f.add(c, "127.0.0.1:8080")
	return c
}

// runServer starts s, calls ready, and serves until SIGINT/SIGTERM.
func runServer(s *server.Server, ready func(*server.Server) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err := s.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	if err := ready(s); err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	<-ctx.Done()
	stop()
	fmt.Fprintln(os.Stderr, "stopping: letting in-flight requests finish (Ctrl-C again to force)")
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	go func() {
		force := make(chan os.Signal, 1)
		signal.Notify(force, os.Interrupt, syscall.SIGTERM)
		select {
		case <-force:
			scancel()
		case <-sctx.Done():
		}
	}()
	return s.Stop(sctx)
}
