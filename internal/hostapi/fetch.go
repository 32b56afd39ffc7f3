package hostapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/nimbusfn/nimbus/internal/telemetry"
)

// hostPattern is one entry of config.allowed_hosts: an exact host, or
// "*.example.com" for any subdomain of example.com. With a port it matches
// only that port.
type hostPattern struct {
	wildcard bool   // "*.suffix"
	host     string // lower-case host, without "*." ("example.com")
	port     string // "" for any port
}

func parseAllowed(list []string) []hostPattern {
	out := make([]hostPattern, 0, len(list))
	for _, s := range list {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		var p hostPattern
		if h, port, err := net.SplitHostPort(s); err == nil {
			s, p.port = h, port
		}
		if rest, ok := strings.CutPrefix(s, "*."); ok {
			p.wildcard, s = true, rest
		}
		p.host = strings.TrimSuffix(strings.Trim(s, "[]"), ".")
		out = append(out, p)
	}
	return out
}

// allowedHost reports whether u's host is in the version's allowed_hosts.
func (h *Host) allowedHost(u *url.URL) bool {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	for _, p := range h.allowed {
		if p.port != "" && p.port != port {
			continue
		}
		if p.wildcard {
			if strings.HasSuffix(host, "."+p.host) {
				return true
			}
		} else if host == p.host {
			return true
		}
	}
	return false
}

// FetchRequest is an outbound HTTP request.
type FetchRequest struct {
	Method string      `json:"method"`
	URL    string      `json:"url"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// FetchResponse is the answer to a FetchRequest, its body read whole.
type FetchResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

type traceKey struct{}

// WithTraceparent returns ctx carrying a W3C traceparent for Fetch to send
// when ctx has no span of its own (the process endpoint, which learns the
// invocation's traceparent from the function's request).
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, traceparent)
}

// errRedirect marks a refused redirect.
var errRedirect = errors.New("redirect refused")

func (h *Host) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > h.f.s.Limits.MaxRedirects {
		return fmt.Errorf("%w: more than %d redirects", errRedirect, h.f.s.Limits.MaxRedirects)
	}
	first := via[0].URL
	if !strings.EqualFold(req.URL.Host, first.Host) || (req.URL.Scheme != first.Scheme && req.URL.Scheme != "https") {
		return fmt.Errorf("%w: %s redirected to %s://%s, another host; follow it yourself if it is in allowed_hosts", errRedirect, first.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// Fetch sends an outbound HTTP request, only to a host in the version's
// allowed_hosts, carrying the invocation's traceparent (from ctx), and reads
// the whole response (at most Limits.MaxFetchResponseBytes). Redirects to
// another host are refused.
func (h *Host) Fetch(ctx context.Context, r FetchRequest) (*FetchResponse, error) {
	const op = "http_request"
	lim := h.f.s.Limits
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, errorf(BadInput, op, "url %q is invalid: %v", r.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errorf(BadInput, op, "url %q: only http and https URLs can be fetched", r.URL)
	}
	if u.Host == "" {
		return nil, errorf(BadInput, op, "url %q has no host", r.URL)
	}
	if u.User != nil {
		return nil, errorf(BadInput, op, "url %q: put credentials in an Authorization header, not in the URL", redactURL(u))
	}
	if !h.allowedHost(u) {
		return nil, errorf(Denied, op, "host %s is not in allowed_hosts", u.Host)
	}
	if int64(len(r.Body)) > lim.MaxFetchRequestBytes {
		return nil, errorf(TooLarge, op, "request body is %d bytes; the limit is %d", len(r.Body), lim.MaxFetchRequestBytes)
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if len(r.Body) > 0 {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, errorf(BadInput, op, "request %s %s: %v", method, r.URL, err)
	}
	for name, values := range r.Header {
		if strings.EqualFold(name, "Host") {
			continue
		}
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if telemetry.FromContext(ctx) != nil {
		telemetry.Inject(ctx, req.Header)
	} else if tp, _ := ctx.Value(traceKey{}).(string); tp != "" {
		req.Header.Set(telemetry.HeaderTraceparent, tp)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, errRedirect) {
			return nil, &Error{Kind: Denied, Op: op, Message: errors.Unwrap(err).Error(), Err: err}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return nil, &Error{Kind: Internal, Op: op, Message: fmt.Sprintf("%s %s: the invocation's deadline passed", method, redactURL(u)), Err: ctx.Err()}
		}
		return nil, &Error{Kind: Internal, Op: op, Message: fmt.Sprintf("%s %s: %v", method, redactURL(u), err), Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, lim.MaxFetchResponseBytes+1))
	if err != nil {
		return nil, &Error{Kind: Internal, Op: op, Message: fmt.Sprintf("reading the response of %s: %v", redactURL(u), err), Err: err}
	}
	if int64(len(b)) > lim.MaxFetchResponseBytes {
		return nil, errorf(TooLarge, op, "the response of %s is over %d bytes", redactURL(u), lim.MaxFetchResponseBytes)
	}
	return &FetchResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}
