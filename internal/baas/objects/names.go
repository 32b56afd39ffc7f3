package objects

import (
	"fmt"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// MaxKeyBytes is the longest object key, in bytes of UTF-8 (as in S3).
const MaxKeyBytes = 1024

// CheckBucketName says what is wrong with a bucket name (S3 naming rules:
// 3–63 characters, lower-case letters, digits, '-' and '.', starting and ending
// with a letter or digit, no "..", not an IP address).
func CheckBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("%w: bucket name %q must be 3 to 63 characters long", ErrInvalidBucketName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%w: bucket name %q may contain only lower-case letters, digits, '-' and '.'", ErrInvalidBucketName, name)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("%w: bucket name %q must start and end with a letter or digit", ErrInvalidBucketName, name)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: bucket name %q must not contain \"..\"", ErrInvalidBucketName, name)
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("%w: bucket name %q must not be an IP address", ErrInvalidBucketName, name)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// CheckKey says what is wrong with an object key.
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: the object key is empty", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: the object key is %d bytes long; the limit is %d", ErrKeyTooLong, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: the object key is not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

func checkTenant(tenant string) error {
	if !registry.ValidName(tenant) {
		return fmt.Errorf("%w: tenant name %q", ErrInvalidTenant, tenant)
	}
	return nil
}

// storeName maps tenant and bucket to the JetStream object store name. Neither
// contains '_', so replacing '.' by '_' keeps the mapping one-to-one.
func storeName(tenant, bucket string) string {
	return "obj_" + tenant + "_" + strings.ReplaceAll(bucket, ".", "_")
}

func catalogKey(tenant, bucket string) string {
	return "obj." + tenant + "." + strings.ReplaceAll(bucket, ".", "_")
}

func uploadKey(tenant, bucket, id string) string {
	return tenant + "." + strings.ReplaceAll(bucket, ".", "_") + "." + id
}
