package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/telemetry"
	"github.com/nimbusfn/nimbus/internal/tenant"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// TestNewRefusesBadConfig checks that server.New refuses the values no
// default can stand in for, with an error that says what to use.
func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		set  func(*server.Config)
		want string
	}{
		{func(c *server.Config) { c.Tracing.Endpoint = "collector:4318" }, `tracing endpoint "collector:4318": use an http:// or https:// URL`},
		{func(c *server.Config) { c.Tracing.TracesURL = "/v1/traces" }, `tracing traces URL "/v1/traces": use an http:// or https:// URL`},
		{func(c *server.Config) { c.Tracing.Endpoint, c.Tracing.Protocol = "http://c:4318", "grpc" }, `tracing: OTLP protocol "grpc": Nimbus exports over OTLP/HTTP only`},
		{func(c *server.Config) { c.Tracing.Protocol = "json" }, `tracing: OTLP protocol "json": use http/protobuf (the default) or http/json`},
		{func(c *server.Config) { c.Tracing.SampleRatio = 1.01 }, `tracing sample ratio 1.01: use a number from 0 to 1`},
		{func(c *server.Config) { c.Tracing.SampleRatio = -0.5 }, `tracing sample ratio -0.5: use a number from 0 to 1`},
		{func(c *server.Config) { c.Tracing.SampleRatio = math.NaN() }, `tracing sample ratio NaN: use a number from 0 to 1`},
		{func(c *server.Config) { c.Prices = &metering.Prices{PerMillionRequests: -0.2} }, `price per million requests -0.2: use US dollars, 0 or more (0 makes it free)`},
		{func(c *server.Config) { c.Prices = &metering.Prices{PerGBSecond: math.Inf(1)} }, `price per GB-second +Inf: use US dollars, 0 or more`},
		{func(c *server.Config) { c.Prices = &metering.Prices{PerGBSecond: math.NaN()} }, `price per GB-second NaN`},
		{func(c *server.Config) { c.SecretsKey = make([]byte, 16) }, `secrets key of 16 bytes: it must be 32 bytes`},
		{func(c *server.Config) { c.SecretsKey = []byte{} }, `secrets key of 0 bytes: it must be 32 bytes`},
	} {
		cfg := server.Config{DataDir: t.TempDir()}
		tc.set(&cfg)
		_, err := server.New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("server.New: %v, want an error saying %q", err, tc.want)
		}
	}
	ok := server.Config{DataDir: t.TempDir(), SecretsKey: make([]byte, 32), Prices: &metering.Prices{PerGBSecond: 0.1},
		Tracing: telemetry.TracingConfig{TracesURL: "https://c/v1/traces", Protocol: telemetry.ProtocolJSON, SampleRatio: 0.5}}
	if _, err := server.New(ok); err != nil {
		t.Fatalf("server.New refused a good config: %v", err)
	}
}

// TestPricesFromConfig checks that a server started with its own prices
// reports them in GET /api/v1/usage and costs usage with them, a price of 0
// making that part free rather than falling back to the default.
func TestPricesFromConfig(t *testing.T) {
	for _, prices := range []metering.Prices{{PerMillionRequests: 4000, PerGBSecond: 0.5}, {PerMillionRequests: 0, PerGBSecond: 0.5}} {
		t.Run(fmt.Sprintf("%v-per-million-requests", prices.PerMillionRequests), func(t *testing.T) { checkPrices(t, prices) })
	}
}

func checkPrices(t *testing.T, prices metering.Prices) {
	e := testenv.Start(t, func(c *server.Config) { c.Prices = &prices })
	e.Deploy("priced", hello(t), registry.Config{MemoryMB: 256})
	const calls = 3
	for i := 0; i < calls; i++ {
		if resp, b := e.Get("/fn/priced?name=Ada"); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, b)
		}
	}
	type row struct {
		Key               string  `json:"key"`
		Invocations       int64   `json:"invocations"`
		BilledInvocations int64   `json:"billed_invocations"`
		GBSeconds         float64 `json:"gb_seconds"`
		Cost              float64 `json:"cost"`
	}
	var rep struct {
		Prices metering.Prices `json:"prices"`
		Rows   []row           `json:"rows"`
		Total  row             `json:"total"`
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		rep.Rows = nil
		if err := json.Unmarshal(mustCall(t, e, "", "GET", "/api/v1/usage?function=priced", nil), &rep); err != nil {
			return err
		}
		if rep.Total.Invocations != calls {
			return fmt.Errorf("usage reports %d invocations, want %d", rep.Total.Invocations, calls)
		}
		return nil
	})
	if rep.Prices != prices {
		t.Fatalf("the report prices usage at %+v, the server was given %+v", rep.Prices, prices)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Key != "priced" {
		t.Fatalf("rows: %+v", rep.Rows)
	}
	for _, r := range []row{rep.Rows[0], rep.Total} {
		if r.BilledInvocations != calls || r.GBSeconds <= 0 {
			t.Fatalf("%s: %+v", r.Key, r)
		}
		want := float64(r.BilledInvocations)/1e6*prices.PerMillionRequests + r.GBSeconds*prices.PerGBSecond
		if math.Abs(r.Cost-want) > 1e-9 {
			t.Fatalf("%s costs %v; at the configured prices %d requests and %v GB-s cost %v", r.Key, r.Cost, r.BilledInvocations, r.GBSeconds, want)
		}
		if atDefaults := metering.DefaultPrices.Cost(r.BilledInvocations, r.GBSeconds); math.Abs(r.Cost-atDefaults) < 1e-9 {
			t.Fatalf("%s costs %v, what the default prices give", r.Key, r.Cost)
		}
	}
}

// TestSecretsKeyFromConfig checks that a server given its secrets key
// encrypts with it and writes no key file, that a restart with the same key
// and data dir reads the secrets, and that another key cannot.
func TestSecretsKeyFromConfig(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	withKey := func(k []byte) func(*server.Config) {
		return func(c *server.Config) { c.DataDir, c.SecretsKey = dir, k }
	}
	const secret = "configured-key-secret-9e1b"
	noKeyFile := func() {
		t.Helper()
		if _, err := os.Stat(filepath.Join(dir, "secrets.key")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("secrets.key in the data dir (%v) although the key came from the config", err)
		}
	}
	readSecret := func(e *testenv.Env) {
		t.Helper()
		if resp, b := e.Get("/fn/sec/env?k=api_token"); resp.StatusCode != 200 || string(b) != secret {
			t.Fatalf("the function's secret: %d %q", resp.StatusCode, b)
		}
	}

	e := testenv.Start(t, withKey(key))
	mustCall(t, e, "", "PUT", "/api/v1/secrets/api_token", []byte(`{"value":"`+secret+`"}`))
	e.Deploy("sec", misbehave(t), registry.Config{Secrets: []string{"api_token"}})
	readSecret(e)
	e.Stop()
	noKeyFile()

	e = testenv.Start(t, withKey(bytes.Clone(key)))
	readSecret(e)
	e.Stop()
	noKeyFile()

	other := make([]byte, 32)
	_, _ = rand.Read(other)
	e = testenv.Start(t, withKey(other))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Tenants.Secrets().Resolve(ctx, registry.DefaultTenant, []string{"api_token"}); !errors.Is(err, tenant.ErrSecretUndecrypt) {
		t.Fatalf("another key read the secret: %v", err)
	}
	e.Stop()
	noKeyFile()
}

// TestTracingFromConfig checks that the whole tracing config reaches the
// exporter: the full traces URL, the encoding and the headers.
func TestTracingFromConfig(t *testing.T) {
	type export struct{ path, contentType, auth string }
	got := make(chan export, 64)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case got <- export{r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization")}:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	}))
	defer collector.Close()
	e := testenv.Start(t, func(c *server.Config) {
		c.Tracing = telemetry.TracingConfig{TracesURL: collector.URL + "/otlp/traces", Protocol: telemetry.ProtocolJSON,
			Headers: map[string]string{"Authorization": "Bearer collector-token"}, FlushInterval: 50 * time.Millisecond}
	})
	e.Deploy("traced", hello(t), registry.Config{})
	if resp, b := e.Get("/fn/traced?name=Ada"); resp.StatusCode != 200 {
		t.Fatalf("call: %d %s", resp.StatusCode, b)
	}
	select {
	case x := <-got:
		if want := (export{"/otlp/traces", "application/json", "Bearer collector-token"}); x != want {
			t.Fatalf("export %+v, want %+v", x, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no span exported within 30s")
	}
}
