package nimbus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
)

// Errors of the host API. Every error a host call returns wraps one of them,
// so test with errors.Is(err, nimbus.ErrNotFound).
var (
	// ErrNotFound: no such key, object, bucket, secret or config value.
	ErrNotFound = errors.New("not found")
	// ErrDenied: not allowed for this function (a secret it does not name in
	// config.secrets, a host outside config.allowed_hosts). The function's log
	// says why.
	ErrDenied = errors.New("denied")
	// ErrUnavailable: the service is not offered here (not running under
	// Nimbus, or the server does not configure it).
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLarge: a value, object or response over the host's limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalid: an argument is invalid (a bad bucket name, a value that is
	// not JSON, …). The function's log says which.
	ErrInvalid = errors.New("invalid argument")
	// ErrHost: the platform failed; the call may succeed if retried.
	ErrHost = errors.New("host error")
)

// hostErr wraps one of the errors above with what was asked.
func hostErr(op string, what string, err error) error {
	if what == "" {
		return fmt.Errorf("nimbus: %s: %w", op, err)
	}
	return fmt.Errorf("nimbus: %s %s: %w", op, what, err)
}

// Bucket is a key-value bucket of the function's tenant. Values are JSON
// documents. A bucket is created by its first Put.
type Bucket struct{ name string }

// KV returns the tenant's key-value bucket name.
func KV(bucket string) *Bucket { return &Bucket{name: bucket} }

// Get returns the value of key; ErrNotFound if there is none.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	return hostKVGet(ctx, b.name, key)
}

// Put stores value, a JSON document, under key.
func (b *Bucket) Put(ctx context.Context, key string, value []byte) error {
	return hostKVPut(ctx, b.name, key, value)
}

// Delete deletes key; deleting a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	return hostKVDelete(ctx, b.name, key)
}

// List returns the keys that start with prefix, in order.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	return hostKVList(ctx, b.name, prefix)
}

// ObjectBucket is an object bucket of the function's tenant. A bucket is
// created by its first Put.
type ObjectBucket struct{ name string }

// Objects returns the tenant's object bucket name.
func Objects(bucket string) *ObjectBucket { return &ObjectBucket{name: bucket} }

// Get reads a whole object; ErrNotFound if there is none.
func (b *ObjectBucket) Get(ctx context.Context, key string) ([]byte, error) {
	return hostObjectGet(ctx, b.name, key)
}

// Put stores data as the object key with a content type ("" lets the
// server choose).
func (b *ObjectBucket) Put(ctx context.Context, key string, data []byte, contentType string) error {
	return hostObjectPut(ctx, b.name, key, contentType, data)
}

// Delete deletes an object; ErrNotFound if there is none.
func (b *ObjectBucket) Delete(ctx context.Context, key string) error {
	return hostObjectDelete(ctx, b.name, key)
}

// List returns the keys of the objects that start with prefix, in order.
func (b *ObjectBucket) List(ctx context.Context, prefix string) ([]string, error) {
	return hostObjectList(ctx, b.name, prefix)
}

// Publish publishes data to the tenant's topic (declared with `nimbus topic
// create`) as a CloudEvent of type "nimbus.function.published".
func Publish(ctx context.Context, topic string, data []byte) error {
	return hostPublish(ctx, topic, "", data)
}

// PublishEvent publishes data to a topic as a CloudEvent of type eventType.
func PublishEvent(ctx context.Context, topic, eventType string, data []byte) error {
	return hostPublish(ctx, topic, eventType, data)
}

// Secret returns the value of a tenant secret the function names in its
// config.secrets (ErrDenied for any other).
func Secret(name string) (string, error) { return hostSecret(name) }

// Config returns the value of the function's env setting name (ErrNotFound
// when it is not set).
func Config(name string) (string, error) { return hostConfig(name) }

// Log writes a structured entry to the function's log: level is debug,
// info, warn or error; kv are alternating keys and values, printed with %v.
// Errors are ignored: logging never fails a function.
func Log(level, msg string, kv ...any) {
	fields := make(map[string]string, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k := fmt.Sprint(kv[i])
		if i+1 == len(kv) {
			fields["!BADKEY"] = k
			break
		}
		fields[k] = fmt.Sprint(kv[i+1])
	}
	_ = hostLog(level, msg, fields)
}

// sortedKeys returns m's keys in order, for a stable encoding.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// HTTPClient returns a client whose requests go out through the host (only
// to hosts in the function's config.allowed_hosts; a redirect to another host
// is refused). Response bodies are read whole by the host before they arrive.
func HTTPClient() *http.Client {
	return &http.Client{Transport: Transport{}, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // the host follows same-host redirects itself
	}}
}

// Transport is an http.RoundTripper that sends requests through the host API.
type Transport struct{}

// RoundTrip sends req through the host.
func (Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		defer req.Body.Close()
		b, err := readAll(req.Body)
		if err != nil {
			return nil, fmt.Errorf("nimbus: reading the request body for %s: %w", req.URL.Redacted(), err)
		}
		body = b
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	resp, err := hostFetch(req.Context(), method, req.URL.String(), req.Header, body)
	if err != nil {
		return nil, err
	}
	resp.Request = req
	return resp, nil
}
