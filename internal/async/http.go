package async

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Routes mounts the async endpoints on mux:
//
//	POST   /async/{name}[@qualifier][/path...]   queue an invocation → 202 {"id","status_url"}
//	GET    /api/v1/invocations/{id}              status and result
//	GET    /api/v1/functions/{name}/dlq          dead letters
//	POST   /api/v1/functions/{name}/dlq/replay   replay {"ids":[…]} or all
//	DELETE /api/v1/functions/{name}/dlq          purge
//
// tenantOf gives the caller's tenant.
func (s *Service) Routes(mux *http.ServeMux, tenantOf func(*http.Request) string) {
	mux.HandleFunc("POST /async/{target...}", func(w http.ResponseWriter, r *http.Request) { s.serveAsync(w, r, tenantOf(r)) })
	mux.HandleFunc("GET /api/v1/invocations/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		st, err := s.Status(r.Context(), id)
		if err == nil && st.Tenant != tenantOf(r) {
			err = ErrNotFound
		}
		if errors.Is(err, ErrNotFound) {
			apierr.Write(w, apierr.New(apierr.NotFound, "no invocation %q (unknown, or its result has expired)", id))
			return
		}
		if err != nil {
			apierr.Write(w, apierr.New(apierr.Unavailable, "%v", err))
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /api/v1/functions/{name}/dlq", func(w http.ResponseWriter, r *http.Request) {
		name, ok := fnName(w, r)
		if !ok {
			return
		}
		dls, err := s.List(r.Context(), tenantOf(r), name)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.Unavailable, "%v", err))
			return
		}
		if len(dls) == 0 {
			if err := s.knownFunction(r.Context(), tenantOf(r), name); err != nil {
				apierr.Write(w, err)
				return
			}
		}
		for i := range dls {
			dls[i].Job.Header = redact(dls[i].Job.Header)
		}
		writeJSON(w, http.StatusOK, map[string]any{"dead_letters": dls, "count": len(dls)})
	})
	mux.HandleFunc("POST /api/v1/functions/{name}/dlq/replay", func(w http.ResponseWriter, r *http.Request) {
		name, ok := fnName(w, r)
		if !ok {
			return
		}
		var in struct {
			IDs []string `json:"ids"`
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "reading the body: %v", err))
			return
		}
		if len(strings.TrimSpace(string(data))) > 0 {
			if err := json.Unmarshal(data, &in); err != nil {
				apierr.Write(w, apierr.New(apierr.BadRequest, `the body must be {"ids":["…"]} or empty for all: %v`, err))
				return
			}
		}
		if err := s.knownFunction(r.Context(), tenantOf(r), name); err != nil {
			apierr.Write(w, err)
			return
		}
		n, err := s.Replay(r.Context(), tenantOf(r), name, in.IDs)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"replayed": n})
	})
	mux.HandleFunc("DELETE /api/v1/functions/{name}/dlq", func(w http.ResponseWriter, r *http.Request) {
		name, ok := fnName(w, r)
		if !ok {
			return
		}
		if err := s.knownFunction(r.Context(), tenantOf(r), name); err != nil {
			apierr.Write(w, err)
			return
		}
		n, err := s.Purge(r.Context(), tenantOf(r), name)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.Unavailable, "%v", err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"purged": n})
	})
}

// knownFunction is nil when tenant has function name, or still holds dead
// letters of it (a deleted function's dead letters stay reachable); else it
// is the function_not_found error, the same whether another tenant has a
// function of that name or not.
func (s *Service) knownFunction(ctx context.Context, tenant, name string) error {
	_, err := s.cfg.Invoker.Resolve(Target{Tenant: tenant, Function: name})
	if err == nil {
		return nil
	}
	if dls, lerr := s.List(ctx, tenant, name); lerr == nil && len(dls) > 0 {
		return nil
	}
	return err
}

func fnName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := registry.CheckName("function", name); err != nil {
		apierr.Write(w, apierr.New(apierr.InvalidName, "%v", err))
		return "", false
	}
	return name, true
}

// ParseTarget splits "name[@qualifier][/path...]" into a target and a path
// beginning with "/".
func ParseTarget(tenant, s string) (Target, string, error) {
	head, path, _ := strings.Cut(s, "/")
	name, qual, _ := strings.Cut(head, "@")
	if err := registry.CheckName("function", name); err != nil {
		return Target{}, "", apierr.New(apierr.InvalidName, "%v", err)
	}
	return Target{Tenant: tenant, Function: name, Qualifier: qual}, "/" + path, nil
}

func (s *Service) serveAsync(w http.ResponseWriter, r *http.Request, tenant string) {
	t, path, err := ParseTarget(tenant, r.PathValue("target"))
	if err != nil {
		apierr.Write(w, err)
		return
	}
	if r.ContentLength > s.cfg.MaxPayload {
		apierr.Write(w, tooLarge(s.cfg.MaxPayload))
		return
	}
	req := &runtime.Request{
		Method: r.Method, ScriptName: "/async/" + strings.TrimSuffix(r.PathValue("target"), strings.TrimPrefix(path, "/")),
		Path: path, RawQuery: r.URL.RawQuery, Header: r.Header, Host: r.Host, RemoteAddr: r.RemoteAddr,
		Body: r.Body, ContentLength: r.ContentLength, Trigger: "async",
	}
	id, err := s.Enqueue(r.Context(), t, req)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	statusURL := "/api/v1/invocations/" + id
	w.Header().Set("X-Nimbus-Invocation-Id", id)
	w.Header().Set("Location", statusURL)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status_url": statusURL})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// redact hides credentials in a stored request's headers when it is shown
// (replays keep the original headers).
func redact(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := h.Clone()
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key"} {
		if _, ok := out[k]; ok {
			out[k] = []string{"[redacted]"}
		}
	}
	return out
}
