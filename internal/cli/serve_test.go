package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

// serveConfig parses args as serve's flags, with env as the whole
// environment, and returns the server Config they make.
func serveConfig(t *testing.T, env map[string]string, args ...string) (server.Config, error) {
	t.Helper()
	var f serveFlags
	c := &cobra.Command{Use: "serve"}
	f.add(c, "127.0.0.1:0")
	f.getenv = func(k string) string { return env[k] }
	if err := c.ParseFlags(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	return f.config(io.Discard)
}

func TestServeFlagsTracing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want telemetry.TracingConfig
	}{
		{name: "off by default", want: telemetry.TracingConfig{Protocol: telemetry.ProtocolProtobuf, SampleRatio: 1}},
		{
			name: "flags",
			args: []string{"--otlp-endpoint", "http://collector:4318", "--otlp-protocol", "http/json",
				"--otlp-header", "Authorization=Bearer a+b/c==", "--otlp-header", "x-team=a,b", "--trace-sample-ratio", "0.25"},
			want: telemetry.TracingConfig{Endpoint: "http://collector:4318", Protocol: telemetry.ProtocolJSON, SampleRatio: 0.25,
				Headers: map[string]string{"Authorization": "Bearer a+b/c==", "X-Team": "a,b"}},
		},
		{
			name: "generic variables",
			env: map[string]string{envOTLPEndpoint: "https://otlp.example.com", envOTLPProtocol: "http/json",
				envOTLPHeaders: "api-key=s%3Dcr%2Cet, x-tenant = acme%20corp,", envSampler: "parentbased_traceidratio", envSamplerArg: "0.5"},
			want: telemetry.TracingConfig{Endpoint: "https://otlp.example.com", Protocol: telemetry.ProtocolJSON, SampleRatio: 0.5,
				Headers: map[string]string{"Api-Key": "s=cr,et", "X-Tenant": "acme corp"}},
		},
		{
			name: "traces variables win over the generic ones",
			env: map[string]string{envOTLPEndpoint: "http://generic:4318", envOTLPTracesEndpoint: "http://traces:4318/custom/path",
				envOTLPProtocol: "http/json", envOTLPTracesProtocol: "http/protobuf",
				envOTLPHeaders: "a=generic", envOTLPTracesHeaders: "b=traces+plus"},
			want: telemetry.TracingConfig{TracesURL: "http://traces:4318/custom/path", Protocol: telemetry.ProtocolProtobuf, SampleRatio: 1,
				Headers: map[string]string{"B": "traces+plus"}},
		},
		{
			name: "flags win over every variable",
			args: []string{"--otlp-endpoint", "http://flag:4318", "--otlp-protocol", "http/json", "--otlp-header", "c=flag%20literal", "--trace-sample-ratio", "1"},
			env: map[string]string{envOTLPEndpoint: "http://generic:4318", envOTLPTracesEndpoint: "http://traces:4318/v1/traces",
				envOTLPTracesProtocol: "http/protobuf", envOTLPTracesHeaders: "b=traces", envSampler: "traceidratio", envSamplerArg: "0.1"},
			want: telemetry.TracingConfig{Endpoint: "http://flag:4318", Protocol: telemetry.ProtocolJSON, SampleRatio: 1,
				Headers: map[string]string{"C": "flag%20literal"}},
		},
		{
			name: "an empty --otlp-endpoint turns export off",
			args: []string{"--otlp-endpoint", ""},
			env:  map[string]string{envOTLPEndpoint: "http://generic:4318"},
			want: telemetry.TracingConfig{Protocol: telemetry.ProtocolProtobuf, SampleRatio: 1},
		},
		{
			name: "the sampler argument counts only for a ratio sampler",
			env:  map[string]string{envOTLPEndpoint: "http://c:4318", envSampler: "always_on", envSamplerArg: "0.1"},
			want: telemetry.TracingConfig{Endpoint: "http://c:4318", Protocol: telemetry.ProtocolProtobuf, SampleRatio: 1},
		},
		{
			name: "a ratio sampler without an argument samples everything",
			env:  map[string]string{envOTLPEndpoint: "http://c:4318", envSampler: "traceidratio"},
			want: telemetry.TracingConfig{Endpoint: "http://c:4318", Protocol: telemetry.ProtocolProtobuf, SampleRatio: 1},
		},
		{
			name: "ratio 0 records only what callers sampled",
			args: []string{"--otlp-endpoint", "http://c:4318", "--trace-sample-ratio", "0"},
			want: telemetry.TracingConfig{Endpoint: "http://c:4318", Protocol: telemetry.ProtocolProtobuf, SampleRatio: math.SmallestNonzeroFloat64},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := serveConfig(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Tracing, tc.want) {
				t.Fatalf("tracing = %+v\nwant      %+v", cfg.Tracing, tc.want)
			}
			// What the CLI makes, the server takes.
			cfg.DataDir = t.TempDir()
			if _, err := server.New(cfg); err != nil {
				t.Fatalf("server.New refused the CLI's config: %v", err)
			}
		})
	}
}

func TestServeFlagsBadValues(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	rawKeyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(rawKeyFile, bytes.Repeat([]byte{0xfe}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	const ep = "http://c:4318"
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string // the error says this
	}{
		{args: []string{"--otlp-endpoint", "collector:4318"}, want: `--otlp-endpoint "collector:4318": use the collector's base URL, such as http://collector:4318`},
		{env: map[string]string{envOTLPEndpoint: "/v1"}, want: envOTLPEndpoint + ` "/v1": use the collector's base URL`},
		{env: map[string]string{envOTLPTracesEndpoint: "ftp://x/v1/traces"}, want: envOTLPTracesEndpoint + ` "ftp://x/v1/traces": use the full URL`},
		{args: []string{"--otlp-endpoint", ep, "--otlp-protocol", "grpc"}, want: `--otlp-protocol: OTLP protocol "grpc": Nimbus exports over OTLP/HTTP only`},
		{env: map[string]string{envOTLPEndpoint: ep, envOTLPProtocol: "http/xml"}, want: envOTLPProtocol + `: OTLP protocol "http/xml": use http/protobuf`},
		{env: map[string]string{envOTLPEndpoint: ep, envOTLPTracesProtocol: "grpc", envOTLPProtocol: "http/json"}, want: envOTLPTracesProtocol + `: OTLP protocol "grpc"`},
		{args: []string{"--otlp-endpoint", ep, "--otlp-header", "x"}, want: `--otlp-header "x": use key=value`},
		{args: []string{"--otlp-endpoint", ep, "--otlp-header", "=v"}, want: `--otlp-header "=v": use key=value`},
		{args: []string{"--otlp-endpoint", ep, "--otlp-header", "a b=c"}, want: `--otlp-header "a b=c": "a b" is not a valid header name`},
		{args: []string{"--otlp-endpoint", ep, "--otlp-header", "a=b\r\nEvil: 1"}, want: `the value of a holds a control character`},
		{env: map[string]string{envOTLPEndpoint: ep, envOTLPHeaders: "a=1,broken"}, want: envOTLPHeaders + `: "broken": use k1=v1,k2=v2 (values URL-encoded)`},
		{env: map[string]string{envOTLPEndpoint: ep, envOTLPTracesHeaders: "a=100%"}, want: envOTLPTracesHeaders + `: "a=100%": invalid URL escape "%": write % as %25`},
		{env: map[string]string{envOTLPEndpoint: ep, envOTLPHeaders: "a=x%0Ay"}, want: `the value of a holds a control character`},
		{args: []string{"--otlp-endpoint", ep, "--trace-sample-ratio", "1.5"}, want: `--trace-sample-ratio 1.5: use a number from 0 to 1`},
		{args: []string{"--otlp-endpoint", ep, "--trace-sample-ratio", "-0.1"}, want: `--trace-sample-ratio -0.1: use a number from 0 to 1`},
		{args: []string{"--otlp-endpoint", ep, "--trace-sample-ratio", "NaN"}, want: `--trace-sample-ratio NaN: use a number from 0 to 1`},
		{env: map[string]string{envOTLPEndpoint: ep, envSampler: "traceidratio", envSamplerArg: "half"}, want: envSamplerArg + ` "half": use a number from 0 to 1`},
		{env: map[string]string{envOTLPEndpoint: ep, envSampler: "parentbased_traceidratio", envSamplerArg: "2"}, want: envSamplerArg + ` 2: use a number from 0 to 1`},
		{args: []string{"--otlp-header", "a=b"}, want: `--otlp-header needs a collector to export to: give --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)`},
		{args: []string{"--trace-sample-ratio", "0.5"}, want: `--trace-sample-ratio needs a collector`},
		{args: []string{"--price-per-million-requests", "-1"}, want: `--price-per-million-requests -1: use a price in US dollars, 0 (free) or more (the default is 0.2)`},
		{args: []string{"--price-per-gb-second", "-0.00001"}, want: `--price-per-gb-second -1e-05: use a price in US dollars, 0 (free) or more (the default is 0.0000166667)`},
		{args: []string{"--price-per-gb-second", "+Inf"}, want: `--price-per-gb-second +Inf: use a price in US dollars`},
		{args: []string{"--price-per-gb-second", "NaN"}, want: `--price-per-gb-second NaN: use a price in US dollars`},
		{args: []string{"--secrets-key-file", keyFile}, env: map[string]string{envSecretsKey: strings.Repeat("cd", 32)}, want: `both --secrets-key-file and NIMBUS_SECRETS_KEY give the secrets key: use one`},
		{args: []string{"--secrets-key-file", filepath.Join(t.TempDir(), "missing")}, want: `--secrets-key-file: open `},
		{args: []string{"--secrets-key-file", rawKeyFile}, want: `secrets key must be 32 bytes written as 64 hex digits or base64 (this file holds 32 raw bytes`},
		{env: map[string]string{envSecretsKey: "not-a-key"}, want: `NIMBUS_SECRETS_KEY: secrets key must be 32 bytes written as 64 hex digits or base64`},
		{args: []string{"--log-level", "loud"}, want: `--log-level "loud": use debug, info, warn or error`},
	} {
		_, err := serveConfig(t, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("args %q env %q: error %v, want one saying %q", tc.args, tc.env, err, tc.want)
		}
		if err != nil && tc.env[envSecretsKey] != "" && strings.Contains(err.Error(), tc.env[envSecretsKey]) {
			t.Errorf("the error repeats the secrets key: %v", err)
		}
	}
}

func TestServeFlagsPrices(t *testing.T) {
	t.Parallel()
	cfg, err := serveConfig(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Prices == nil || *cfg.Prices != metering.DefaultPrices {
		t.Fatalf("default prices %+v, want %+v", cfg.Prices, metering.DefaultPrices)
	}
	cfg, err = serveConfig(t, nil, "--price-per-million-requests", "0.35", "--price-per-gb-second", "0.00002")
	if err != nil {
		t.Fatal(err)
	}
	if want := (metering.Prices{PerMillionRequests: 0.35, PerGBSecond: 0.00002}); *cfg.Prices != want {
		t.Fatalf("prices %+v, want %+v", *cfg.Prices, want)
	}
	// 0 makes requests free; it is not "the default".
	cfg, err = serveConfig(t, nil, "--price-per-million-requests", "0")
	if err != nil {
		t.Fatal(err)
	}
	if want := (metering.Prices{PerMillionRequests: 0, PerGBSecond: metering.DefaultPrices.PerGBSecond}); *cfg.Prices != want {
		t.Fatalf("prices %+v, want %+v", *cfg.Prices, want)
	}
}

func TestServeFlagsSecretsKey(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{0x5a, 0x01}, 16)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hexFile := write("hex", "  "+hex.EncodeToString(key)+"\n")
	b64File := write("b64", base64.StdEncoding.EncodeToString(key)+"\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []byte
	}{
		{name: "neither: the server keeps one in the data dir", want: nil},
		{name: "hex file", args: []string{"--secrets-key-file", hexFile}, want: key},
		{name: "base64 file", args: []string{"--secrets-key-file", b64File}, want: key},
		{name: "env hex", env: map[string]string{envSecretsKey: hex.EncodeToString(key)}, want: key},
		{name: "env base64url", env: map[string]string{envSecretsKey: base64.RawURLEncoding.EncodeToString(key)}, want: key},
	} {
		cfg, err := serveConfig(t, tc.env, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(cfg.SecretsKey, tc.want) || (tc.want == nil) != (cfg.SecretsKey == nil) {
			t.Fatalf("%s: key %x, want %x", tc.name, cfg.SecretsKey, tc.want)
		}
	}
}

// TestServeHelpAndRefusal checks that serve and dev both offer the flags
// with their defaults and variables, and that a bad value stops serve before
// it starts anything.
func TestServeHelpAndRefusal(t *testing.T) {
	for _, cmd := range []string{"serve", "dev"} {
		code, out, errOut := runCLI(t, "", cmd, "--help")
		if code != 0 {
			t.Fatalf("%s --help: %d %s", cmd, code, errOut)
		}
		for _, s := range []string{"--otlp-endpoint URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			"--otlp-protocol", "--otlp-header key=value", "OTEL_EXPORTER_OTLP_HEADERS", "--trace-sample-ratio", "OTEL_TRACES_SAMPLER_ARG",
			"--price-per-million-requests USD", "(default 0.2)", "--price-per-gb-second USD", "(default 0.0000166667)",
			"--secrets-key-file PATH", "NIMBUS_SECRETS_KEY", "generated into DATA/secrets.key"} {
			if !strings.Contains(out, s) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, s, out)
			}
		}
	}
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "", "serve", "--listen", "127.0.0.1:0", "--data", dir, "--otlp-endpoint", "http://127.0.0.1:4318", "--otlp-protocol", "grpc")
	if code != 1 || !strings.Contains(errOut, `error: --otlp-protocol: OTLP protocol "grpc"`) {
		t.Fatalf("serve with a bad protocol: exit %d, %s", code, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused serve wrote to its data dir: %v", entries)
	}
}
