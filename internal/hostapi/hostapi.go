// Package hostapi owns what function code may call on the platform: key-value
// data, objects, publishing to topics, secrets, configuration, structured logs
// and outbound HTTP, each confined to the calling version's tenant. The wasm
// runtime offers it as imports of the nimbus host module; the process runtime
// over a per-instance local HTTP endpoint (Handler).
package hostapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// Kind classifies a failed host call so that the ABI can map it to a code.
type Kind int

const (
	// NotFound: no such key, object, bucket, secret or config value.
	NotFound Kind = iota + 1
	// Denied: not allowed for this function (a secret it does not name, a
	// host outside allowed_hosts).
	Denied
	// TooLarge: a value, object or response over the host's limit.
	TooLarge
	// BadInput: an argument is invalid (a bad bucket name, a value that is not JSON).
	BadInput
	// Unavailable: the service is not configured on this server.
	Unavailable
	// Internal: the platform failed; the call may succeed later.
	Internal
)

func (k Kind) String() string {
	switch k {
	case NotFound:
		return "not_found"
	case Denied:
		return "denied"
	case TooLarge:
		return "too_large"
	case BadInput:
		return "bad_input"
	case Unavailable:
		return "unavailable"
	case Internal:
		return "internal"
	}
	return "unknown"
}

// Error is a classified host-call failure. Message is for the function's author.
type Error struct {
	Kind    Kind
	Op      string // "kv_get", "http_request", …
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(k Kind, op, format string, args ...any) *Error {
	return &Error{Kind: k, Op: op, Message: fmt.Sprintf(format, args...)}
}

// KindOf reports the Kind of err: Internal for an unclassified error, 0 for nil.
func KindOf(err error) Kind {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// LogSink receives a function's log lines (runtime.LogSink satisfies it).
type LogSink interface {
	Log(invocationID, stream string, line []byte)
}

// Services are the platform services the host API reaches. A nil service
// makes its calls fail with Unavailable.
type Services struct {
	KV      *kv.Service
	Objects *objects.Service
	// Publish publishes data as a CloudEvent of type ceType on tenant's topic
	// (the server wires triggers.Service.PublishData or similar).
	Publish func(ctx context.Context, tenant, topic string, data []byte, ceType string) error
	// Secrets resolves tenant's secrets by name (tenant.Vault.Resolve).
	Secrets func(ctx context.Context, tenant string, names []string) (map[string]string, error)
	// Logs gives the log sink of a version (the invoker's LogSinks.Sink).
	Logs func(v *registry.Version) LogSink
	// Client makes outbound requests; nil uses a client on http.DefaultTransport.
	// Its CheckRedirect and Timeout are replaced by the host API's own.
	Client *http.Client
	Logger *slog.Logger
	Limits Limits
}

// Limits bound what one host call may move. Zero values take the defaults.
type Limits struct {
	// MaxObjectBytes caps an object read or written through the host API
	// (default 32 MiB; larger objects go through the REST or S3 APIs).
	MaxObjectBytes int64
	// MaxFetchRequestBytes caps an outbound request body (default 8 MiB).
	MaxFetchRequestBytes int64
	// MaxFetchResponseBytes caps an outbound response body (default 16 MiB).
	MaxFetchResponseBytes int64
	// FetchTimeout bounds one outbound request, redirects included (default
	// 30 s); the invocation's deadline bounds it too.
	FetchTimeout time.Duration
	// MaxRedirects is how many same-host redirects a fetch follows (default 5).
	MaxRedirects int
	// MaxListKeys caps a kv_list or object_list answer (default 10,000).
	MaxListKeys int
}

func (l *Limits) defaults() {
	if l.MaxObjectBytes <= 0 {
		l.MaxObjectBytes = 32 << 20
	}
	if l.MaxFetchRequestBytes <= 0 {
		l.MaxFetchRequestBytes = 8 << 20
	}
	if l.MaxFetchResponseBytes <= 0 {
		l.MaxFetchResponseBytes = 16 << 20
	}
	if l.FetchTimeout <= 0 {
		l.FetchTimeout = 30 * time.Second
	}
	if l.MaxRedirects <= 0 {
		l.MaxRedirects = 5
	}
	if l.MaxListKeys <= 0 {
		l.MaxListKeys = 10000
	}
}

// Factory makes the Host of each function version.
type Factory struct {
	s         Services
	log       *slog.Logger
	transport http.RoundTripper
}

// New builds a factory over s.
func New(s Services) *Factory {
	s.Limits.defaults()
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	var tr http.RoundTripper = http.DefaultTransport
	if s.Client != nil && s.Client.Transport != nil {
		tr = s.Client.Transport
	}
	return &Factory{s: s, log: s.Logger.With("component", "hostapi"), transport: tr}
}

// For returns the host API of version v: what goes into runtime.Spec.Host.
// Its tenant, secrets, configuration and allowed hosts are v's.
func (f *Factory) For(v *registry.Version) *Host {
	h := &Host{f: f, tenant: v.Tenant, function: v.Function, version: v.Number}
	h.env = v.Config.Env
	h.secrets = make(map[string]bool, len(v.Config.Secrets))
	for _, s := range v.Config.Secrets {
		h.secrets[s] = true
	}
	h.allowed = parseAllowed(v.Config.AllowedHosts)
	if f.s.Logs != nil {
		h.logs = f.s.Logs(v)
	}
	h.client = &http.Client{
		Transport:     f.transport,
		CheckRedirect: h.checkRedirect,
		Timeout:       f.s.Limits.FetchTimeout,
	}
	return h
}

// Host is the host API of one function version. It is safe for concurrent use.
type Host struct {
	f        *Factory
	tenant   string
	function string
	version  int
	env      map[string]string
	secrets  map[string]bool
	allowed  []hostPattern
	logs     LogSink
	client   *http.Client
}

// Tenant is the tenant every call of h is confined to.
func (h *Host) Tenant() string { return h.tenant }

// Function names the function h serves, for messages.
func (h *Host) Function() string { return h.function }

// Limits are the limits h enforces.
func (h *Host) Limits() Limits { return h.f.s.Limits }

// Secret returns the value of the secret name, if the version names it in
// config.secrets (Denied otherwise, NotFound if the tenant has no such secret).
func (h *Host) Secret(ctx context.Context, name string) (string, error) {
	const op = "secret_get"
	if !h.secrets[name] {
		return "", errorf(Denied, op, "secret %q is not named in the function's config.secrets", name)
	}
	if h.f.s.Secrets == nil {
		return "", errorf(Unavailable, op, "secrets are not configured on this server")
	}
	m, err := h.f.s.Secrets(ctx, h.tenant, []string{name})
	if err != nil {
		if k := classify(err); k == NotFound {
			return "", &Error{Kind: NotFound, Op: op, Message: fmt.Sprintf("secret %q does not exist", name), Err: err}
		}
		return "", &Error{Kind: Internal, Op: op, Message: fmt.Sprintf("reading secret %q", name), Err: err}
	}
	v, ok := m[name]
	if !ok {
		return "", errorf(NotFound, op, "secret %q does not exist", name)
	}
	return v, nil
}

// ErrSecretNotFound may be wrapped by Services.Secrets for a missing secret;
// errors whose text ends in "not found" are treated the same way.
var ErrSecretNotFound = errors.New("secret not found")

// classify maps an error of another package onto a Kind: apierr codes by
// their HTTP status, texts ending in "not found" as NotFound.
func classify(err error) Kind {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		switch ae.Code.Status {
		case http.StatusNotFound:
			return NotFound
		case http.StatusBadRequest:
			return BadInput
		case http.StatusForbidden, http.StatusUnauthorized:
			return Denied
		case http.StatusRequestEntityTooLarge:
			return TooLarge
		}
		return Internal
	}
	if errors.Is(err, ErrSecretNotFound) {
		return NotFound
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasSuffix(strings.ToLower(e.Error()), "not found") {
			return NotFound
		}
	}
	return Internal
}

// Config returns the value of the version's environment variable name.
func (h *Host) Config(name string) (string, error) {
	v, ok := h.env[name]
	if !ok {
		return "", errorf(NotFound, "config_get", "config value %q is not set in the function's env", name)
	}
	return v, nil
}

// Publish publishes data to the tenant's topic as a CloudEvent of type
// ceType (default "nimbus.function.published").
func (h *Host) Publish(ctx context.Context, topic string, data []byte, ceType string) error {
	const op = "publish"
	if !registry.ValidName(topic) {
		return errorf(BadInput, op, "topic name %q is invalid: use lower-case letters, digits and '-', starting with a letter", topic)
	}
	if h.f.s.Publish == nil {
		return errorf(Unavailable, op, "topics are not configured on this server")
	}
	if ceType == "" {
		ceType = "nimbus.function.published"
	}
	if err := h.f.s.Publish(ctx, h.tenant, topic, data, ceType); err != nil {
		return &Error{Kind: classify(err), Op: op, Message: fmt.Sprintf("publishing to topic %q", topic), Err: err}
	}
	return nil
}
