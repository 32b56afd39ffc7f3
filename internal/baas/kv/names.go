package kv

import (
	"fmt"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// MaxKeyBytes is the longest key, in bytes of UTF-8.
const MaxKeyBytes = 1024

// checkBucket says what is wrong with an app bucket name (S3 naming rules:
// 3–63 characters, lower-case letters, digits, '-' and '.', starting and
// ending with a letter or digit, no "..", not an IP address).
func checkBucket(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("%w: bucket name %q must be 3 to 63 characters long", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%w: bucket name %q may contain only lower-case letters, digits, '-' and '.'", ErrInvalidName, name)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("%w: bucket name %q must start and end with a letter or digit", ErrInvalidName, name)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: bucket name %q must not contain \"..\"", ErrInvalidName, name)
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("%w: bucket name %q must not be an IP address", ErrInvalidName, name)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func checkTenant(tenant string) error {
	if !registry.ValidName(tenant) {
		return fmt.Errorf("%w: tenant name %q", ErrInvalidName, tenant)
	}
	return nil
}

// checkKey says what is wrong with a document key.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: the key is empty", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: the key is %d bytes long; the limit is %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: the key is not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

// streamName maps tenant and bucket to the JetStream KV bucket name. Tenants
// never contain '_' and app buckets never contain '_' either, so replacing '.'
// by '_' keeps the mapping one-to-one and tenants apart.
func streamName(tenant, bucket string) string {
	return "kv_" + tenant + "_" + strings.ReplaceAll(bucket, ".", "_")
}

// catalogKey is the key of a bucket's entry in the catalog bucket.
func catalogKey(tenant, bucket string) string {
	return "kv." + tenant + "." + strings.ReplaceAll(bucket, ".", "_")
}

// encodeKey maps an arbitrary UTF-8 key onto the JetStream key alphabet
// [-/_=.a-zA-Z0-9]: letters, digits, '-', '_' and '/' stand for themselves,
// every other byte becomes "=XX" (upper-case hex). The result never contains
// '.', so it is always one subject token sequence without empty tokens.
func encodeKey(key string) string {
	var b strings.Builder
	b.Grow(len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/' {
			b.WriteByte(c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// decodeKey reverses encodeKey.
func decodeKey(enc string) (string, error) {
	if !strings.Contains(enc, "=") {
		return enc, nil
	}
	b := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if c != '=' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(enc) {
			return "", fmt.Errorf("stored key %q is truncated", enc)
		}
		hi, ok1 := unhex(enc[i+1])
		lo, ok2 := unhex(enc[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("stored key %q has a bad escape", enc)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
