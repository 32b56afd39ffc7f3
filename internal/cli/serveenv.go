package cli

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/nimbusfn/nimbus/internal/telemetry"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// The environment variables the server flags fall back to: OpenTelemetry's
// standard exporter and sampler variables, and Nimbus's secrets key.
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTLPProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envOTLPHeaders        = "OTEL_EXPORTER_OTLP_HEADERS"
	envOTLPTracesHeaders  = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
	envSampler            = "OTEL_TRACES_SAMPLER"
	envSamplerArg         = "OTEL_TRACES_SAMPLER_ARG"
	envSecretsKey         = "NIMBUS_SECRETS_KEY"
)

// tracing is the trace export config from the --otlp-* and
// --trace-sample-ratio flags and, for each one not given, the OpenTelemetry
// variables (the traces-specific one before the generic one, as the
// OpenTelemetry specification orders them).
func (f *serveFlags) tracing(getenv func(string) string) (telemetry.TracingConfig, error) {
	var tc telemetry.TracingConfig
	switch {
	case f.changed("otlp-endpoint"): // --otlp-endpoint "" turns export off whatever the environment says
		if f.otlpEndpoint != "" && !httpURL(f.otlpEndpoint) {
			return tc, fmt.Errorf("--otlp-endpoint %q: use the collector's base URL, such as http://collector:4318", f.otlpEndpoint)
		}
		tc.Endpoint = f.otlpEndpoint
	case getenv(envOTLPTracesEndpoint) != "":
		tc.TracesURL = getenv(envOTLPTracesEndpoint)
		if !httpURL(tc.TracesURL) {
			return tc, fmt.Errorf("%s %q: use the full URL spans are posted to, such as http://collector:4318/v1/traces", envOTLPTracesEndpoint, tc.TracesURL)
		}
	case getenv(envOTLPEndpoint) != "":
		tc.Endpoint = getenv(envOTLPEndpoint)
		if !httpURL(tc.Endpoint) {
			return tc, fmt.Errorf("%s %q: use the collector's base URL, such as http://collector:4318", envOTLPEndpoint, tc.Endpoint)
		}
	}
	exporting := tc.Endpoint != "" || tc.TracesURL != ""
	for _, fl := range []string{"otlp-protocol", "otlp-header", "trace-sample-ratio"} {
		if f.changed(fl) && !exporting {
			return tc, fmt.Errorf("--%s needs a collector to export to: give --otlp-endpoint (or %s)", fl, envOTLPEndpoint)
		}
	}

	tc.Protocol = f.otlpProtocol
	src := "--otlp-protocol"
	if !f.changed("otlp-protocol") {
		if k, v := firstEnv(getenv, envOTLPTracesProtocol, envOTLPProtocol); v != "" {
			tc.Protocol, src = v, k
		}
	}
	if err := telemetry.CheckProtocol(tc.Protocol); err != nil {
		return tc, fmt.Errorf("%s: %w", src, err)
	}

	var err error
	if f.changed("otlp-header") {
		tc.Headers, err = flagHeaders(f.otlpHeaders)
	} else if k, v := firstEnv(getenv, envOTLPTracesHeaders, envOTLPHeaders); v != "" {
		tc.Headers, err = envHeaders(k, v)
	}
	if err != nil {
		return tc, err
	}

	ratio, src := f.sampleRatio, "--trace-sample-ratio"
	if !f.changed("trace-sample-ratio") {
		switch getenv(envSampler) {
		case "traceidratio", "parentbased_traceidratio":
			if arg := strings.TrimSpace(getenv(envSamplerArg)); arg != "" {
				if ratio, err = strconv.ParseFloat(arg, 64); err != nil {
					return tc, fmt.Errorf("%s %q: use a number from 0 to 1", envSamplerArg, arg)
				}
				src = envSamplerArg
			}
		}
	}
	if !(ratio >= 0 && ratio <= 1) {
		return tc, fmt.Errorf("%s %v: use a number from 0 to 1 (1 exports every trace)", src, ratio)
	}
	tc.SampleRatio = ratio
	if ratio == 0 {
		// The tracer reads 0 as "every trace". The smallest ratio above 0
		// starts a recorded trace only when the random draw is exactly 0
		// (one in 2^53): only traces a caller sampled are exported.
		tc.SampleRatio = math.SmallestNonzeroFloat64
	}
	return tc, nil
}

// firstEnv returns the first of names set to a non-empty value, and it.
func firstEnv(getenv func(string) string, names ...string) (string, string) {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return n, v
		}
	}
	return "", ""
}

// flagHeaders reads --otlp-header values, key=value each, taken literally.
func flagHeaders(kvs []string) (map[string]string, error) {
	h := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--otlp-header %q: use key=value", kv)
		}
		if err := checkHeader(k, v); err != nil {
			return nil, fmt.Errorf("--otlp-header %q: %w", kv, err)
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	return h, nil
}

// envHeaders reads an OTEL_EXPORTER_OTLP_*HEADERS value: comma-separated
// key=value pairs whose keys and values are URL-encoded (the W3C Baggage
// format without properties). Spaces around keys and values are dropped.
func envHeaders(name, list string) (map[string]string, error) {
	h := map[string]string{}
	for _, kv := range strings.Split(list, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		ek, ev, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(ek) == "" {
			return nil, fmt.Errorf("%s: %q: use k1=v1,k2=v2 (values URL-encoded)", name, kv)
		}
		k, err := url.PathUnescape(strings.TrimSpace(ek))
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %v: write %% as %%25", name, kv, err)
		}
		v, err := url.PathUnescape(strings.TrimSpace(ev))
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %v: write %% as %%25", name, kv, err)
		}
		if err := checkHeader(k, v); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, kv, err)
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	return h, nil
}

// checkHeader refuses what cannot be sent as an HTTP header field.
func checkHeader(k, v string) error {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return fmt.Errorf("%q is not a valid header name (letters, digits and -)", k)
		}
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("the value of %s holds a control character", k)
		}
	}
	return nil
}

// httpURL reports whether s is an absolute http or https URL with a host.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// secretsKey is the secrets key from --secrets-key-file or
// NIMBUS_SECRETS_KEY, or nil (the server then keeps one in the data
// directory). The key itself is never a flag: it would show in ps. Errors
// never repeat the key.
func (f *serveFlags) secretsKey(getenv func(string) string) ([]byte, error) {
	env := getenv(envSecretsKey)
	switch {
	case f.secretsKeyFile != "" && env != "":
		return nil, fmt.Errorf("both --secrets-key-file and %s give the secrets key: use one", envSecretsKey)
	case f.secretsKeyFile != "":
		b, err := os.ReadFile(f.secretsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		key, err := tenant.ParseSecretsKey(string(b))
		if err != nil {
			hint := ""
			if len(b) == 32 {
				hint = " (this file holds 32 raw bytes, like a data directory's secrets.key: give its base64, `base64 < FILE`)"
			}
			return nil, fmt.Errorf("--secrets-key-file %s: %w%s", f.secretsKeyFile, err, hint)
		}
		return key, nil
	case env != "":
		key, err := tenant.ParseSecretsKey(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envSecretsKey, err)
		}
		return key, nil
	}
	return nil, nil
}
