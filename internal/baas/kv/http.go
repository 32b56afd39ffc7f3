package kv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// Routes mounts the REST API on mux. tenantOf names the caller's tenant (set by
// the server's authentication); an empty answer is refused with 401.
//
//	GET    /api/v1/kv                       list buckets
//	PUT    /api/v1/kv/{bucket}              create a bucket ({history, ttl, max_value_bytes})
//	DELETE /api/v1/kv/{bucket}              delete a bucket
//	GET    /api/v1/kv/{bucket}              list keys (?prefix=&limit=&cursor=) or watch (?watch=1, SSE)
//	GET    /api/v1/kv/{bucket}/{key...}     a document (?history=1: every revision)
//	PUT    /api/v1/kv/{bucket}/{key...}     store a document (If-Match, If-None-Match: *)
//	DELETE /api/v1/kv/{bucket}/{key...}     delete a document (If-Match)
func (s *Service) Routes(mux *http.ServeMux, tenantOf func(*http.Request) string) {
	h := func(f func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			t := tenantOf(r)
			if t == "" {
				apierr.Write(w, apierr.New(apierr.Unauthorized, "an API key is required"))
				return
			}
			f(w, r, t)
		}
	}
	mux.HandleFunc("GET /api/v1/kv", h(s.httpListBuckets))
	mux.HandleFunc("PUT /api/v1/kv/{bucket}", h(s.httpCreateBucket))
	mux.HandleFunc("DELETE /api/v1/kv/{bucket}", h(s.httpDeleteBucket))
	mux.HandleFunc("GET /api/v1/kv/{bucket}", h(s.httpListKeys))
	mux.HandleFunc("GET /api/v1/kv/{bucket}/{key...}", h(s.httpGet))
	mux.HandleFunc("PUT /api/v1/kv/{bucket}/{key...}", h(s.httpPut))
	mux.HandleFunc("DELETE /api/v1/kv/{bucket}/{key...}", h(s.httpDelete))
}

// apiError maps a service error onto the API error catalog.
func apiError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrInvalidName):
		return apierr.New(apierr.InvalidName, "%s", msg)
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrInvalidValue), errors.Is(err, ErrInvalidOptions):
		return apierr.New(apierr.BadRequest, "%s", msg)
	case errors.Is(err, ErrTooLarge):
		return apierr.New(apierr.PayloadTooLarge, "%s", msg)
	case errors.Is(err, ErrNoSuchBucket), errors.Is(err, ErrNotFound):
		return apierr.New(apierr.NotFound, "%s", msg)
	case errors.Is(err, ErrBucketExists):
		return apierr.New(apierr.Conflict, "%s", msg)
	case errors.Is(err, ErrRevisionMismatch):
		return apierr.New(apierr.PreconditionFail, "%s", msg)
	}
	return apierr.New(apierr.Internal, "%s", msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Service) httpListBuckets(w http.ResponseWriter, r *http.Request, tenant string) {
	bs, err := s.ListBuckets(r.Context(), tenant)
	if err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	if bs == nil {
		bs = []BucketInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"buckets": bs})
}

func (s *Service) httpCreateBucket(w http.ResponseWriter, r *http.Request, tenant string) {
	var opts BucketOptions
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "reading the request body: %v", err))
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "bucket options must be JSON {\"history\":1..64,\"ttl\":\"1h\",\"max_value_bytes\":n}: %v", err))
			return
		}
	}
	info, err := s.CreateBucket(r.Context(), tenant, r.PathValue("bucket"), opts)
	if err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

func (s *Service) httpDeleteBucket(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := s.DeleteBucket(r.Context(), tenant, r.PathValue("bucket")); err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) httpListKeys(w http.ResponseWriter, r *http.Request, tenant string) {
	q := r.URL.Query()
	if v := q.Get("watch"); v == "1" || v == "true" {
		s.httpWatch(w, r, tenant)
		return
	}
	opts := ListOptions{Prefix: q.Get("prefix"), Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			apierr.Write(w, apierr.New(apierr.BadRequest, "limit must be a number from 1 to 1000, not %q", v))
			return
		}
		opts.Limit = n
	}
	page, err := s.List(r.Context(), tenant, r.PathValue("bucket"), opts)
	if err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Service) httpWatch(w http.ResponseWriter, r *http.Request, tenant string) {
	bucket := r.PathValue("bucket")
	rc := http.NewResponseController(w)
	open := false
	// The stream opens once the watch is in place, so that a client that
	// writes when it sees the opening comment sees its own write.
	ready := func() error {
		open = true
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		// A comment line tells the client the stream is open.
		_, _ = io.WriteString(w, ": watching "+bucket+"\n\n")
		return rc.Flush()
	}
	err := s.watch(r.Context(), tenant, bucket, r.URL.Query().Get("prefix"), ready, func(e Entry) error {
		data, _ := json.Marshal(e)
		kind := "kv.put"
		if e.Op == "delete" {
			kind = "kv.deleted"
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Revision, kind, data); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && !open {
		apierr.Write(w, apiError(err))
		return
	}
	if err != nil {
		s.log.Debug("watch ended", "tenant", tenant, "bucket", bucket, "error", err)
	}
}

func (s *Service) httpGet(w http.ResponseWriter, r *http.Request, tenant string) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
	if v := r.URL.Query().Get("history"); v == "1" || v == "true" {
		es, err := s.History(r.Context(), tenant, bucket, key)
		if err != nil {
			apierr.Write(w, apiError(err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"key": key, "history": es})
		return
	}
	e, err := s.Get(r.Context(), tenant, bucket, key)
	if err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	rev := strconv.FormatUint(e.Revision, 10)
	w.Header().Set("ETag", `"`+rev+`"`)
	w.Header().Set("X-Nimbus-Revision", rev)
	w.Header().Set("Last-Modified", e.Time.UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm != "*" {
		if n, err := parseRevision(inm); err == nil && n == e.Revision {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	_, _ = w.Write(e.Value)
}

// parseRevision reads a revision from If-Match: 7, "7" or W/"7".
func parseRevision(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("a revision must be a positive number, not %q", v)
	}
	return n, nil
}

// condition reads If-Match / If-None-Match.
func condition(r *http.Request) (Condition, error) {
	var c Condition
	if v := r.Header.Get("If-Match"); v != "" {
		n, err := parseRevision(v)
		if err != nil {
			return c, fmt.Errorf("If-Match: %w", err)
		}
		c.IfRevision = n
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if strings.TrimSpace(v) != "*" {
			return c, fmt.Errorf("If-None-Match accepts only \"*\" (create only)")
		}
		if c.IfRevision != 0 {
			return c, fmt.Errorf("use either If-Match or If-None-Match, not both")
		}
		c.IfAbsent = true
	}
	return c, nil
}

func (s *Service) httpPut(w http.ResponseWriter, r *http.Request, tenant string) {
	cond, err := condition(r)
	if err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.cfg.MaxValueBytes)+1))
	if err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "reading the request body: %v", err))
		return
	}
	rev, err := s.Put(r.Context(), tenant, r.PathValue("bucket"), r.PathValue("key"), body, cond)
	if err != nil {
		if errors.Is(err, ErrRevisionMismatch) && cond.IfAbsent {
			err = fmt.Errorf("%w (If-None-Match: * and the key exists)", err)
		}
		apierr.Write(w, apiError(err))
		return
	}
	w.Header().Set("ETag", `"`+strconv.FormatUint(rev, 10)+`"`)
	w.Header().Set("X-Nimbus-Revision", strconv.FormatUint(rev, 10))
	writeJSON(w, http.StatusOK, map[string]uint64{"revision": rev})
}

func (s *Service) httpDelete(w http.ResponseWriter, r *http.Request, tenant string) {
	cond, err := condition(r)
	if err != nil || cond.IfAbsent {
		if err == nil {
			err = fmt.Errorf("If-None-Match makes no sense on DELETE")
		}
		apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
		return
	}
	rev, err := s.Delete(r.Context(), tenant, r.PathValue("bucket"), r.PathValue("key"), cond)
	if err != nil {
		apierr.Write(w, apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"revision": rev})
}
