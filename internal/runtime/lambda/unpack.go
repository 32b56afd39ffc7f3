package lambda

import "github.com/nimbusfn/nimbus/internal/runtime/bundle"

// unpackCode places code (a single file stored as name, or a .zip/.tar.gz
// bundle) in a directory under root keyed by digest, and returns that
// directory. Hostile bundles are refused by the bundle package as BadCode.
func unpackCode(root, digest string, code []byte, name string, maxBytes int64, maxFiles int) (string, error) {
	return bundle.Cached(root, digest, code, name, bundle.Limits{MaxBytes: maxBytes, MaxFiles: maxFiles})
}
