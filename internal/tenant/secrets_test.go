package tenant

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nimbusfn/nimbus/internal/bus"
)

func TestSecretsEncryptedAtRest(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	const value = "s3cr3t-database-password-0123456789"
	if code, data := e.do("PUT", "/api/v1/secrets/DB_PASSWORD", e.adminKey, map[string]any{"value": value}, nil); code != 200 {
		t.Fatalf("%d %s", code, data)
	}
	kv, err := e.b.JS.KeyValue(ctx, bus.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := kv.Get(ctx, "s.default.DB_PASSWORD")
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{value, base64.StdEncoding.EncodeToString([]byte(value)), "s3cr3t"} {
		if bytes.Contains(raw.Value(), []byte(form)) {
			t.Fatalf("stored record contains %q: %s", form, raw.Value())
		}
	}
	got, err := e.s.Secrets().Resolve(ctx, "default", []string{"DB_PASSWORD"})
	if err != nil || got["DB_PASSWORD"] != value {
		t.Fatalf("Resolve = %v, %v", got, err)
	}
	// Two writes of one value give different ciphertexts (random nonce).
	if _, err := e.s.Secrets().Set(ctx, "default", "DB_PASSWORD", value); err != nil {
		t.Fatal(err)
	}
	raw2, _ := kv.Get(ctx, "s.default.DB_PASSWORD")
	if bytes.Equal(raw.Value(), raw2.Value()) {
		t.Fatal("re-encrypting gave the same record: nonce reused")
	}
	if _, err := e.s.Secrets().Resolve(ctx, "default", []string{"MISSING"}); !errors.Is(err, ErrSecretNotFound) || !strings.Contains(err.Error(), "MISSING") {
		t.Fatalf("missing secret: %v", err)
	}
}

func TestSecretBoundToTenantAndName(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.mustTenant("other")
	if _, err := e.s.Secrets().Set(ctx, "default", "API_TOKEN", "value-of-default"); err != nil {
		t.Fatal(err)
	}
	kv, _ := e.b.JS.KeyValue(ctx, bus.BucketTenants)
	raw, err := kv.Get(ctx, "s.default.API_TOKEN")
	if err != nil {
		t.Fatal(err)
	}
	// Move the ciphertext under another tenant, and under another name.
	if _, err := kv.Put(ctx, "s.other.API_TOKEN", raw.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Secrets().Resolve(ctx, "other", []string{"API_TOKEN"}); !errors.Is(err, ErrSecretUndecrypt) {
		t.Fatalf("moved to another tenant: %v, want ErrSecretUndecrypt", err)
	}
	if _, err := kv.Put(ctx, "s.default.OTHER_NAME", raw.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Secrets().Resolve(ctx, "default", []string{"OTHER_NAME"}); !errors.Is(err, ErrSecretUndecrypt) {
		t.Fatalf("moved to another name: %v, want ErrSecretUndecrypt", err)
	}
	// The original is intact.
	if got, err := e.s.Secrets().Resolve(ctx, "default", []string{"API_TOKEN"}); err != nil || got["API_TOKEN"] != "value-of-default" {
		t.Fatalf("original: %v %v", got, err)
	}
}

func TestSecretLimitsAndNames(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	max := strings.Repeat("x", MaxSecretSize)
	if code, data := e.do("PUT", "/api/v1/secrets/BIG", e.adminKey, map[string]any{"value": max}, nil); code != 200 {
		t.Fatalf("64 KB secret: %d %s", code, data)
	}
	code, data := e.do("PUT", "/api/v1/secrets/BIG", e.adminKey, map[string]any{"value": max + "y"}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(data), "65536") {
		t.Fatalf("64 KB + 1: %d %s", code, data)
	}
	got, err := e.s.Secrets().Resolve(ctx, "default", []string{"BIG"})
	if err != nil || got["BIG"] != max {
		t.Fatal("the refused write changed the stored secret")
	}
	for _, name := range []string{"1ABC", "has-dash", "dot.ted", strings.Repeat("A", 129)} {
		if code, data := e.do("PUT", "/api/v1/secrets/"+name, e.adminKey, map[string]any{"value": "v"}, nil); code != 400 || errCode(data) != "invalid_name" {
			t.Errorf("secret name %q: %d %s", name, code, data)
		}
	}
	if code, _ := e.do("PUT", "/api/v1/secrets/OK", e.adminKey, map[string]any{}, nil); code != 400 {
		t.Fatalf("missing value: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/v1/secrets/NOPE", e.adminKey, nil, nil); code != 404 {
		t.Fatalf("delete missing: %d", code)
	}
}

func TestSecretsNeverReturned(t *testing.T) {
	e := newEnv(t, false)
	const value = "never-show-me-7f3a"
	for _, name := range []string{"B_SECRET", "A_SECRET"} {
		code, data := e.do("PUT", "/api/v1/secrets/"+name, e.adminKey, map[string]any{"value": value}, nil)
		if code != 200 || bytes.Contains(data, []byte(value)) {
			t.Fatalf("set answered %d %s", code, data)
		}
	}
	var list struct{ Secrets []SecretInfo }
	code, data := e.do("GET", "/api/v1/secrets", e.adminKey, nil, &list)
	if code != 200 || bytes.Contains(data, []byte(value)) {
		t.Fatalf("list: %d %s", code, data)
	}
	if len(list.Secrets) != 2 || list.Secrets[0].Name != "A_SECRET" || list.Secrets[0].Created.IsZero() {
		t.Fatalf("list = %+v", list.Secrets)
	}
	if code, _ := e.do("DELETE", "/api/v1/secrets/A_SECRET", e.adminKey, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	e.do("GET", "/api/v1/secrets", e.adminKey, nil, &list)
	if len(list.Secrets) != 1 || list.Secrets[0].Name != "B_SECRET" {
		t.Fatalf("after delete = %+v", list.Secrets)
	}
}

func TestRedactor(t *testing.T) {
	r := NewRedactor([]string{"hunter22", "hunter2222", "abc", "", "tok-XYZ"})
	for _, tc := range []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"pw=hunter22;", "pw=[REDACTED];"},
		{"hunter2222", "[REDACTED]"},
		{"hunter22hunter22", "[REDACTED]"},
		{"a tok-XYZ and hunter22 end", "a [REDACTED] and [REDACTED] end"},
		{"abc stays (too short to redact)", "abc stays (too short to redact)"},
		{"tok-XYtok-XYZZ", "tok-XY[REDACTED]Z"},
		{"", ""},
	} {
		if got := string(r.Redact([]byte(tc.in))); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	in := []byte("clean line")
	if out := r.Redact(in); &out[0] != &in[0] {
		t.Error("a clean line was copied")
	}
	if !NewRedactor(nil).Empty() || string(NewRedactor(nil).Redact([]byte("x"))) != "x" {
		t.Error("empty redactor")
	}
	e := newEnv(t, false)
	ctx := context.Background()
	_, _ = e.s.Secrets().Set(ctx, "default", "K1", "value-one")
	_, _ = e.s.Secrets().Set(ctx, "default", "K2", "value-two")
	tr, err := e.s.Secrets().Redactor(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(tr.Redact([]byte("value-one/value-two"))); got != "[REDACTED]/[REDACTED]" {
		t.Fatalf("tenant redactor: %q", got)
	}
}

func TestParseSecretsKey(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{strings.Repeat("ab", 32), base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k)} {
		got, err := ParseSecretsKey(s)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("ParseSecretsKey(%q) = %x, %v", s, got, err)
		}
	}
	if _, err := ParseSecretsKey("short"); err == nil {
		t.Error("short key accepted")
	}
}

func BenchmarkRedact(b *testing.B) {
	r := NewRedactor([]string{"secret-value-one", "another-secret-2", "third-one-333"})
	line := []byte(strings.Repeat("an ordinary log line with nothing to hide, ", 4))
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		r.Redact(line)
	}
}
