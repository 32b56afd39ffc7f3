// Package bus owns Nimbus's connection to NATS: an embedded server with JetStream
// (the default, in-process, no TCP listener unless asked) or an external cluster,
// plus the names of every stream, bucket and subject Nimbus uses.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says where the bus lives. The zero value (with Dir set) is a single
// embedded node with no network listener.
type Config struct {
	// Dir is the data directory; JetStream stores under Dir/jetstream.
	Dir string
	// URL connects to an external NATS cluster instead of embedding a server.
	URL string
	// Listen, when set (host:port), opens the embedded server's client port.
	Listen string
	// ClusterListen and ClusterRoutes let embedded servers form a cluster.
	ClusterListen string
	ClusterRoutes []string
	// ServerName names this node in a cluster; defaults to the host name.
	ServerName string
	// MQTTListen, when set (host:port), opens the NATS server's MQTT 3.1.1 listener.
	MQTTListen string
	// Replicas for streams and buckets; 0 means 1 (3 when the cluster has 3+ nodes).
	Replicas int
	Logger   *slog.Logger
}

// Bus is a live connection to NATS with JetStream.
type Bus struct {
	cfg    Config
	Server *server.Server // nil when connected to an external cluster
	Conn   *nats.Conn
	JS     jetstream.JetStream
	log    *slog.Logger
}

// Open starts the embedded server (unless cfg.URL is set) and connects to it.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	b := &Bus{cfg: cfg, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("component", "bus")
	var opts []nats.Option
	opts = append(opts, nats.Name("nimbus"), nats.MaxReconnects(-1))
	url := cfg.URL
	if url == "" {
		if cfg.Dir == "" {
			return nil, errors.New("bus: a data directory is required for the embedded server")
		}
		sopts := &server.Options{
			ServerName:         cfg.ServerName,
			JetStream:          true,
			StoreDir:           filepath.Join(cfg.Dir, "jetstream"),
			NoSigs:             true,
			MaxPayload:         8 << 20,
			JetStreamMaxMemory: 256 << 20,
		}
		if cfg.Listen != "" {
			host, port, err := splitHostPort(cfg.Listen)
			if err != nil {
				return nil, fmt.Errorf("bus: listen address %q: %w", cfg.Listen, err)
			}
			sopts.Host, sopts.Port = host, port
		} else {
			sopts.DontListen = true
		}
		if cfg.ClusterListen != "" {
			host, port, err := splitHostPort(cfg.ClusterListen)
			if err != nil {
				return nil, fmt.Errorf("bus: cluster address %q: %w", cfg.ClusterListen, err)
			}
			sopts.Cluster.Name = "nimbus"
			sopts.Cluster.Host, sopts.Cluster.Port = host, port
			sopts.Routes = server.RoutesFromStr(joinComma(cfg.ClusterRoutes))
			if sopts.ServerName == "" {
				h, _ := os.Hostname()
				sopts.ServerName = fmt.Sprintf("%s-%d", h, port)
			}
		}
		if cfg.MQTTListen != "" {
			host, port, err := splitHostPort(cfg.MQTTListen)
			if err != nil {
				return nil, fmt.Errorf("bus: mqtt address %q: %w", cfg.MQTTListen, err)
			}
			sopts.MQTT.Host, sopts.MQTT.Port = host, port
			if sopts.ServerName == "" {
				sopts.ServerName = "nimbus"
			}
		}
		ns, err := server.NewServer(sopts)
		if err != nil {
			return nil, fmt.Errorf("bus: embedded server: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			ns.Shutdown()
			return nil, errors.New("bus: embedded server did not become ready within 30s")
		}
		b.Server = ns
		opts = append(opts, nats.InProcessServer(ns))
		url = ns.ClientURL()
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect %s: %w", url, err)
	}
	b.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.JS = js
	// Wait until JetStream answers (a cluster needs a meta leader first).
	deadline := time.Now().Add(60 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.AccountInfo(actx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.Close()
			return nil, fmt.Errorf("bus: jetstream not available: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b, nil
}

// Replicas is the replica count for streams and buckets.
func (b *Bus) Replicas() int {
	if b.cfg.Replicas > 0 {
		return b.cfg.Replicas
	}
	return 1
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() error {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !b.Conn.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.Conn.Close()
	}
	b.shutdownServer()
	return nil
}

func (b *Bus) shutdownServer() {
	if b.Server != nil {
		b.Server.Shutdown()
		b.Server.WaitForShutdown()
	}
}

// KeyValue opens a KV bucket, creating it with cfg when missing.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = b.Replicas()
	}
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: key-value bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ObjectStore opens an object store bucket, creating it with cfg when missing.
func (b *Bus) ObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = b.Replicas()
	}
	os, err := b.JS.CreateOrUpdateObjectStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: object store %s: %w", cfg.Bucket, err)
	}
	return os, nil
}

// Stream creates or updates a stream.
func (b *Bus) Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = b.Replicas()
	}
	s, err := b.JS.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	return s, nil
}
