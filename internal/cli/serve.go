package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/server"
)

func init() { register(newServeCmd) }

// serveFlags are the server's flags, shared by serve and dev.
type serveFlags struct {
	cfg      server.Config
	routes   string
	logLevel string
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
}

func (f *serveFlags) config(stderr *os.File) (server.Config, error) {
	cfg := f.cfg
	if f.routes != "" {
		cfg.ClusterRoutes = strings.Split(f.routes, ",")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
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
--nats-url is given). SIGINT or SIGTERM stop it gracefully: in-flight requests finish.`,
		Example: `  nimbus serve
  nimbus serve --listen 0.0.0.0:8080 --data /var/lib/nimbus
  nimbus serve --s3-listen 127.0.0.1:9000 --mqtt-listen 127.0.0.1:1883`,
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
