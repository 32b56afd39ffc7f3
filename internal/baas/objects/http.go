package objects

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// MetaHeaderPrefix carries user metadata over the REST API
// (X-Nimbus-Meta-Owner: ada ⇒ metadata {"owner":"ada"}).
const MetaHeaderPrefix = "X-Nimbus-Meta-"

// Routes mounts the REST API on mux. tenantOf names the caller's tenant; an
// empty answer is refused with 401.
//
//	GET    /api/v1/objects                    list buckets
//	PUT    /api/v1/objects/{bucket}           create a bucket
//	DELETE /api/v1/objects/{bucket}           delete an empty bucket
//	GET    /api/v1/objects/{bucket}           list (?prefix=&delimiter=&limit=&cursor=)
//	PUT    /api/v1/objects/{bucket}/{key...}  upload (Content-Type, X-Nimbus-Meta-*)
//	GET    /api/v1/objects/{bucket}/{key...}  download (Range), HEAD for the headers only
//	DELETE /api/v1/objects/{bucket}/{key...}  delete
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
	mux.HandleFunc("GET /api/v1/objects", h(s.httpListBuckets))
	mux.HandleFunc("PUT /api/v1/objects/{bucket}", h(s.httpCreateBucket))
	mux.HandleFunc("DELETE /api/v1/objects/{bucket}", h(s.httpDeleteBucket))
	mux.HandleFunc("GET /api/v1/objects/{bucket}", h(s.httpList))
	mux.HandleFunc("PUT /api/v1/objects/{bucket}/{key...}", h(s.httpPut))
	mux.HandleFunc("GET /api/v1/objects/{bucket}/{key...}", h(s.httpGet))
	mux.HandleFunc("DELETE /api/v1/objects/{bucket}/{key...}", h(s.httpDelete))
}

// APIError maps a service error onto the REST error catalog.
func APIError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrInvalidBucketName), errors.Is(err, ErrInvalidTenant):
		return apierr.New(apierr.InvalidName, "%s", msg)
	case errors.Is(err, ErrNoSuchBucket), errors.Is(err, ErrNoSuchKey), errors.Is(err, ErrNoSuchUpload):
		return apierr.New(apierr.NotFound, "%s", msg)
	case errors.Is(err, ErrBucketExists), errors.Is(err, ErrBucketNotEmpty):
		return apierr.New(apierr.Conflict, "%s", msg)
	case errors.Is(err, ErrEntityTooLarge):
		return apierr.New(apierr.PayloadTooLarge, "%s", msg)
	case errors.Is(err, ErrInvalidRange):
		return apierr.New(apierr.RangeNotSatisfiable, "%s", msg)
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrKeyTooLong), errors.Is(err, ErrBadDigest), errors.Is(err, ErrInvalidPart),
		errors.Is(err, ErrInvalidPartOrder), errors.Is(err, ErrEntityTooSmall), errors.Is(err, ErrInvalidArgument):
		return apierr.New(apierr.BadRequest, "%s", msg)
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
		apierr.Write(w, APIError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"buckets": bs})
}

func (s *Service) httpCreateBucket(w http.ResponseWriter, r *http.Request, tenant string) {
	b, err := s.CreateBucket(r.Context(), tenant, r.PathValue("bucket"))
	if err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	writeJSON(w, http.StatusCreated, b)
}

func (s *Service) httpDeleteBucket(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := s.DeleteBucket(r.Context(), tenant, r.PathValue("bucket")); err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) httpList(w http.ResponseWriter, r *http.Request, tenant string) {
	q := r.URL.Query()
	opts := ListOptions{Prefix: q.Get("prefix"), Delimiter: q.Get("delimiter")}
	if c := q.Get("cursor"); c != "" {
		after, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "cursor %q is not one this server gave out", c))
			return
		}
		opts.After = string(after)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			apierr.Write(w, apierr.New(apierr.BadRequest, "limit must be a number from 1 to 1000, not %q", v))
			return
		}
		opts.Max = n
	}
	res, err := s.List(r.Context(), tenant, r.PathValue("bucket"), opts)
	if err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	out := struct {
		Objects        []ObjectInfo `json:"objects"`
		CommonPrefixes []string     `json:"common_prefixes"`
		NextCursor     string       `json:"next_cursor,omitempty"`
	}{res.Objects, res.CommonPrefixes, ""}
	if out.CommonPrefixes == nil {
		out.CommonPrefixes = []string{}
	}
	if res.IsTruncated {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(res.NextAfter))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) httpPut(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.ContentLength > s.cfg.MaxObjectBytes {
		apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "the object is %d bytes; the limit is %d", r.ContentLength, s.cfg.MaxObjectBytes))
		return
	}
	opts := PutOptions{ContentType: r.Header.Get("Content-Type"), Metadata: map[string]string{}}
	for k, vs := range r.Header {
		if name, ok := strings.CutPrefix(k, MetaHeaderPrefix); ok && len(vs) > 0 {
			opts.Metadata[strings.ToLower(name)] = vs[0]
		}
	}
	if v := r.Header.Get("Content-MD5"); v != "" {
		sum, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(sum) != 16 {
			apierr.Write(w, apierr.New(apierr.BadRequest, "Content-MD5 must be the base64 of a 16-byte MD5 digest"))
			return
		}
		opts.ContentMD5 = sum
	}
	info, err := s.Put(r.Context(), tenant, r.PathValue("bucket"), r.PathValue("key"), r.Body, opts)
	if err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	w.Header().Set("ETag", `"`+info.ETag+`"`)
	writeJSON(w, http.StatusOK, info)
}

// SetHeaders writes an object's headers (Content-Type, ETag, Last-Modified,
// user metadata with prefix) to h.
func SetHeaders(h http.Header, info ObjectInfo, metaPrefix string) {
	h.Set("Content-Type", info.ContentType)
	h.Set("ETag", `"`+info.ETag+`"`)
	h.Set("Last-Modified", info.LastModified.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	for k, v := range info.Metadata {
		h.Set(metaPrefix+k, v)
	}
}

func (s *Service) httpGet(w http.ResponseWriter, r *http.Request, tenant string) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
	if r.Method == http.MethodHead {
		info, err := s.Head(r.Context(), tenant, bucket, key)
		if err != nil {
			apierr.Write(w, APIError(err))
			return
		}
		SetHeaders(w.Header(), info, MetaHeaderPrefix)
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	rng, err := ParseRange(r.Header.Get("Range"))
	if err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	o, err := s.Get(r.Context(), tenant, bucket, key, rng)
	if err != nil {
		if errors.Is(err, ErrInvalidRange) {
			if info, herr := s.Head(r.Context(), tenant, bucket, key); herr == nil {
				w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
			}
		}
		apierr.Write(w, APIError(err))
		return
	}
	defer o.Body.Close()
	SetHeaders(w.Header(), o.Info, MetaHeaderPrefix)
	w.Header().Set("Content-Length", strconv.FormatInt(o.Length, 10))
	status := http.StatusOK
	if o.Ranged {
		w.Header().Set("Content-Range", ContentRange(o.Start, o.Length, o.Info.Size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if _, err := io.Copy(w, o.Body); err != nil {
		s.log.Debug("download interrupted", "bucket", bucket, "key", key, "error", err)
	}
}

func (s *Service) httpDelete(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := s.Delete(r.Context(), tenant, r.PathValue("bucket"), r.PathValue("key")); err != nil {
		apierr.Write(w, APIError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
