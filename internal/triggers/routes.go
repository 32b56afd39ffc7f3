package triggers

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

var wildcardRE = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

// rebuildRoutes rebuilds the custom-route mux from s.routes. Callers hold s.mu.
func (s *Service) rebuildRoutes() {
	mux := http.NewServeMux()
	keys := make([]string, 0, len(s.routes))
	for k := range s.routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := s.routes[k]
		if err := addRoute(mux, s, t); err != nil {
			s.log.Error("custom route not mounted", "trigger", k, "err", err)
		}
	}
	s.mux = mux
}

func addRoute(mux *http.ServeMux, s *Service, t *Trigger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	mux.Handle(t.HTTP.pattern(), s.routeHandler(t))
	return nil
}

// checkRouteConflict refuses a route that the mux cannot hold next to the
// routes already mounted (of any tenant).
func (s *Service) checkRouteConflict(t *Trigger) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mux := http.NewServeMux()
	for k, o := range s.routes {
		if k == t.key() {
			continue
		}
		if err := addRoute(mux, s, o); err != nil {
			continue
		}
	}
	if err := addRoute(mux, s, t); err != nil {
		return apierr.New(apierr.Conflict, "route %q conflicts with an existing route: %v", t.HTTP.pattern(), err)
	}
	return nil
}

// Handler serves the custom routes of every http trigger; the server mounts
// it as the fallback for paths nothing else serves.
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		mux := s.mux
		s.mu.Unlock()
		if _, pattern := mux.Handler(r); pattern == "" {
			apierr.Write(w, apierr.New(apierr.NotFound, "nothing is served at %s %s", r.Method, r.URL.Path))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Service) routeHandler(t *Trigger) http.Handler {
	var params []string
	for _, m := range wildcardRE.FindAllStringSubmatch(t.HTTP.Path, -1) {
		params = append(params, m[1])
	}
	tgt := invoke.Target{Tenant: t.Tenant, Function: t.Function}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBody {
			apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "request body is larger than %d bytes", s.cfg.MaxBody))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBody+1))
		if err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "reading the request body: %v", err))
			return
		}
		if int64(len(body)) > s.cfg.MaxBody {
			apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "request body is larger than %d bytes", s.cfg.MaxBody))
			return
		}
		v, err := s.cfg.Invoker.Resolve(tgt)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		if err := s.authorize(r, v); err != nil {
			apierr.Write(w, err)
			return
		}
		if wh := t.HTTP.Webhook; wh != nil {
			if err := verifySignature(wh, r.Header.Get(wh.Header), body); err != nil {
				apierr.Write(w, apierr.New(apierr.Unauthorized, "%v", err))
				return
			}
		}
		h := r.Header.Clone()
		for _, p := range params {
			h.Set("X-Nimbus-Param-"+p, r.PathValue(p))
		}
		h.Set("X-Nimbus-Trigger", KindHTTP)
		req := &runtime.Request{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: h, Host: r.Host,
			RemoteAddr: r.RemoteAddr, Body: bytes.NewReader(body), ContentLength: int64(len(body)), Trigger: KindHTTP,
		}
		ww := &wroteWriter{ResponseWriter: w}
		if _, err := s.cfg.Invoker.Invoke(r.Context(), tgt, req, ww); err != nil && !ww.wrote {
			apierr.Write(w, invoke.HTTPError(t.Function, err))
		}
	})
}

// verifySignature checks an HMAC of body against sig ("sha256=<hex>" or "<hex>").
func verifySignature(wh *Webhook, sig string, body []byte) error {
	if sig == "" {
		return fmt.Errorf("the webhook signature header %s is missing", wh.Header)
	}
	var newHash func() hash.Hash = sha256.New
	if wh.Algo == "sha1" {
		newHash = sha1.New
	}
	sig = strings.TrimPrefix(strings.TrimPrefix(sig, wh.Algo+"="), strings.ToUpper(wh.Algo)+"=")
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil {
		return fmt.Errorf("the webhook signature in %s is not hex", wh.Header)
	}
	mac := hmac.New(newHash, []byte(wh.Secret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("the webhook signature in %s does not match the body", wh.Header)
	}
	return nil
}

// wroteWriter remembers whether anything reached the client.
type wroteWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteWriter) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }
func (w *wroteWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}
func (w *wroteWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.wrote = true
		f.Flush()
	}
}
func (w *wroteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authorize applies the function's auth setting to a custom-route request.
func (s *Service) authorize(r *http.Request, v *registry.Version) error {
	s.mu.Lock()
	authz := s.cfg.Authorize
	s.mu.Unlock()
	if authz != nil {
		return authz(r, v)
	}
	switch v.Config.Auth {
	case "", "public":
		return nil
	}
	return apierr.New(apierr.Unauthorized, "function %q requires auth %q, which custom routes on this server cannot check", v.Function, v.Config.Auth)
}

// SetAuthorize sets Config.Authorize after construction.
func (s *Service) SetAuthorize(f func(r *http.Request, v *registry.Version) error) {
	s.mu.Lock()
	s.cfg.Authorize = f
	s.mu.Unlock()
}
