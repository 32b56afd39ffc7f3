package triggers

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// Routes mounts the trigger API on mux:
//
//	GET    /api/v1/functions/{name}/triggers            list
//	GET    /api/v1/functions/{name}/triggers/{trigger}  one
//	PUT    /api/v1/functions/{name}/triggers/{trigger}  create or replace (201 / 200)
//	DELETE /api/v1/functions/{name}/triggers/{trigger}
//	GET    /api/v1/topics, PUT|DELETE /api/v1/topics/{name}
//	GET    /api/v1/queues, PUT|DELETE /api/v1/queues/{name}
//	POST   /api/v1/queues/{name}/messages               one JSON value or an array → 202 {"ids"}
//	POST   /events/{topic}                              a CloudEvent (binary or structured) → 202
//
// Custom routes are served by Handler, mounted separately as the fallback.
func (s *Service) Routes(mux *http.ServeMux, tenantOf func(*http.Request) string) {
	mux.HandleFunc("GET /api/v1/functions/{name}/triggers", func(w http.ResponseWriter, r *http.Request) {
		fn, ok := pathName(w, r, "name", "function")
		if !ok {
			return
		}
		ts, err := s.List(r.Context(), tenantOf(r), fn)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		if len(ts) == 0 {
			// No triggers and no such function: 404, as for any other
			// function the caller's tenant does not have.
			if _, err := s.cfg.Invoker.Resolve(invoke.Target{Tenant: tenantOf(r), Function: fn}); err != nil {
				apierr.Write(w, err)
				return
			}
		}
		out := make([]*Trigger, len(ts))
		for i, t := range ts {
			out[i] = t.public()
		}
		writeJSON(w, http.StatusOK, map[string]any{"triggers": out})
	})
	mux.HandleFunc("GET /api/v1/functions/{name}/triggers/{trigger}", func(w http.ResponseWriter, r *http.Request) {
		fn, ok := pathName(w, r, "name", "function")
		if !ok {
			return
		}
		t, err := s.Get(r.Context(), tenantOf(r), fn, r.PathValue("trigger"))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, t.public())
	})
	mux.HandleFunc("PUT /api/v1/functions/{name}/triggers/{trigger}", func(w http.ResponseWriter, r *http.Request) {
		fn, ok := pathName(w, r, "name", "function")
		if !ok {
			return
		}
		var t Trigger
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "the trigger must be a JSON object (name, kind, schedule|topic|queue|http|mqtt|kv|objects): %v", err))
			return
		}
		name := r.PathValue("trigger")
		if t.Name != "" && t.Name != name {
			apierr.Write(w, apierr.New(apierr.BadRequest, "the trigger's name %q differs from the name in the path %q", t.Name, name))
			return
		}
		if t.Function != "" && t.Function != fn {
			apierr.Write(w, apierr.New(apierr.BadRequest, "the trigger's function %q differs from the function in the path %q", t.Function, fn))
			return
		}
		t.Name, t.Function, t.Tenant = name, fn, tenantOf(r)
		created, err := s.Put(r.Context(), &t)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, t.public())
	})
	mux.HandleFunc("DELETE /api/v1/functions/{name}/triggers/{trigger}", func(w http.ResponseWriter, r *http.Request) {
		fn, ok := pathName(w, r, "name", "function")
		if !ok {
			return
		}
		if err := s.Delete(r.Context(), tenantOf(r), fn, r.PathValue("trigger")); err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("trigger")})
	})

	mux.HandleFunc("GET /api/v1/topics", func(w http.ResponseWriter, r *http.Request) {
		ts, err := s.Topics(r.Context(), tenantOf(r))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"topics": ts})
	})
	mux.HandleFunc("PUT /api/v1/topics/{name}", func(w http.ResponseWriter, r *http.Request) {
		t, err := s.DeclareTopic(r.Context(), tenantOf(r), r.PathValue("name"))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, t)
	})
	mux.HandleFunc("DELETE /api/v1/topics/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteTopic(r.Context(), tenantOf(r), r.PathValue("name")); err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("name")})
	})
	mux.HandleFunc("GET /api/v1/queues", func(w http.ResponseWriter, r *http.Request) {
		qs, err := s.Queues(r.Context(), tenantOf(r))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"queues": qs})
	})
	mux.HandleFunc("PUT /api/v1/queues/{name}", func(w http.ResponseWriter, r *http.Request) {
		q, err := s.DeclareQueue(r.Context(), tenantOf(r), r.PathValue("name"))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, q)
	})
	mux.HandleFunc("DELETE /api/v1/queues/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteQueue(r.Context(), tenantOf(r), r.PathValue("name")); err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("name")})
	})
	mux.HandleFunc("POST /api/v1/queues/{name}/messages", func(w http.ResponseWriter, r *http.Request) {
		name, ok := pathName(w, r, "name", "queue")
		if !ok {
			return
		}
		body, ok := readBody(w, r, s.cfg.MaxBody)
		if !ok {
			return
		}
		var items []json.RawMessage
		trimmed := bytes.TrimSpace(body)
		switch {
		case len(trimmed) == 0:
			apierr.Write(w, apierr.New(apierr.BadRequest, "the body must be one JSON value or a JSON array of messages"))
			return
		case trimmed[0] == '[':
			if err := json.Unmarshal(trimmed, &items); err != nil {
				apierr.Write(w, apierr.New(apierr.BadRequest, "the body is not a valid JSON array: %v", err))
				return
			}
		default:
			if !json.Valid(trimmed) {
				apierr.Write(w, apierr.New(apierr.BadRequest, "the body is not valid JSON; send one JSON value or an array of them"))
				return
			}
			items = []json.RawMessage{trimmed}
		}
		ids, err := s.Send(r.Context(), tenantOf(r), name, items)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"ids": ids})
	})
	mux.HandleFunc("POST /events/{topic}", func(w http.ResponseWriter, r *http.Request) {
		topic, ok := pathName(w, r, "topic", "topic")
		if !ok {
			return
		}
		body, ok := readBody(w, r, 1<<20)
		if !ok {
			return
		}
		ce, err := parseHTTPEvent(r.Header, body)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
			return
		}
		if ce.Time == "" {
			ce.Time = time.Now().UTC().Format(time.RFC3339Nano)
		}
		if err := s.Publish(r.Context(), tenantOf(r), topic, ce); err != nil {
			apierr.Write(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"id": ce.ID, "topic": topic})
	})
}

func pathName(w http.ResponseWriter, r *http.Request, param, kind string) (string, bool) {
	name := r.PathValue(param)
	if err := registry.CheckName(kind, name); err != nil {
		apierr.Write(w, apierr.New(apierr.InvalidName, "%v", err))
		return "", false
	}
	return name, true
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.ContentLength > limit {
		apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "the body is larger than %d bytes", limit))
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "reading the body: %v", err))
		return nil, false
	}
	if int64(len(body)) > limit {
		apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "the body is larger than %d bytes", limit))
		return nil, false
	}
	return body, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
