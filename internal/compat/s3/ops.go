package s3

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/nimbusfn/nimbus/internal/baas/objects"
)

const (
	metaPrefix      = "X-Amz-Meta-"
	maxMetaBytes    = 2 << 10
	maxDeleteKeys   = 1000
	maxRequestXML   = 1 << 20
	maxPartBytes    = 5 << 30
	listDefaultKeys = 1000
)

func (s *Server) listBuckets(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth) {
	bs, err := s.obj.ListBuckets(ctx, a.tenant)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	res := listAllMyBucketsResult{Owner: owner{ID: a.tenant, DisplayName: a.tenant}}
	for _, b := range bs {
		res.Buckets = append(res.Buckets, bucket{Name: b.Name, CreationDate: isoTime(b.Created)})
	}
	writeXML(w, http.StatusOK, res)
}

// putOptions reads Content-Type, x-amz-meta-* and Content-MD5.
func putOptions(r *http.Request) (objects.PutOptions, error) {
	opts := objects.PutOptions{ContentType: r.Header.Get("Content-Type"), Metadata: map[string]string{}}
	size := 0
	for k, vs := range r.Header {
		if name, ok := strings.CutPrefix(k, metaPrefix); ok && len(vs) > 0 {
			opts.Metadata[strings.ToLower(name)] = vs[0]
			size += len(name) + len(vs[0])
		}
	}
	if size > maxMetaBytes {
		return opts, s3err("MetadataTooLarge", "user metadata must not exceed 2 KB")
	}
	if v := r.Header.Get("Content-MD5"); v != "" {
		sum, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(sum) != 16 {
			return opts, s3err("InvalidDigest", "the Content-MD5 you specified is not valid")
		}
		opts.ContentMD5 = sum
	}
	return opts, nil
}

// checkLength refuses bodies without a length and bodies over max.
func checkLength(r *http.Request, max int64) error {
	if r.ContentLength < 0 {
		return s3err("MissingContentLength", "you must provide the Content-Length HTTP header")
	}
	if r.ContentLength > max {
		return s3err("EntityTooLarge", "your proposed upload exceeds the maximum allowed size of "+strconv.FormatInt(max, 10)+" bytes")
	}
	return nil
}

func (s *Server) putObject(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key string) {
	if err := checkLength(r, s.obj.MaxObjectBytes()); err != nil {
		writeError(w, r, toS3(err))
		return
	}
	opts, err := putOptions(r)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	info, err := s.obj.Put(ctx, a.tenant, b, key, r.Body, opts)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	w.Header().Set("ETag", `"`+info.ETag+`"`)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) getObject(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key string) {
	q := r.URL.Query()
	rng, err := objects.ParseRange(r.Header.Get("Range"))
	if err != nil && !errors.Is(err, objects.ErrInvalidRange) {
		rng = nil // S3 ignores a Range header it cannot parse
	}
	rangeErr := err != nil
	var info objects.ObjectInfo
	var o *objects.Object
	if r.Method == http.MethodHead || rangeErr {
		info, err = s.obj.Head(ctx, a.tenant, b, key)
		if err == nil && rangeErr && r.Method != http.MethodHead {
			err = fmt.Errorf("%w: Range %q", objects.ErrInvalidRange, r.Header.Get("Range"))
		}
	} else {
		o, err = s.obj.Get(ctx, a.tenant, b, key, rng)
		if err == nil {
			defer o.Body.Close()
			info = o.Info
		} else if errors.Is(err, objects.ErrInvalidRange) {
			info, _ = s.obj.Head(ctx, a.tenant, b, key)
		}
	}
	if err != nil {
		if errors.Is(err, objects.ErrInvalidRange) {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
		}
		writeError(w, r, toS3(err))
		return
	}
	// Conditional requests.
	if im := r.Header.Get("If-Match"); im != "" && im != "*" && !etagListHas(im, info.ETag) {
		writeError(w, r, s3err("PreconditionFailed", "at least one of the preconditions you specified did not hold"))
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == "*" || etagListHas(inm, info.ETag)) {
		w.Header().Set("ETag", `"`+info.ETag+`"`)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h := w.Header()
	objects.SetHeaders(h, info, metaPrefix)
	for param, header := range map[string]string{
		"response-content-type": "Content-Type", "response-content-disposition": "Content-Disposition",
		"response-cache-control": "Cache-Control", "response-content-encoding": "Content-Encoding",
		"response-content-language": "Content-Language", "response-expires": "Expires",
	} {
		if v := q.Get(param); v != "" {
			h.Set(header, v)
		}
	}
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(o.Length, 10))
	status := http.StatusOK
	if o.Ranged {
		h.Set("Content-Range", objects.ContentRange(o.Start, o.Length, info.Size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if _, err := io.Copy(w, o.Body); err != nil {
		s.log.Debug("download interrupted", "bucket", b, "key", key, "error", err)
	}
}

func etagListHas(list, etag string) bool {
	for _, e := range strings.Split(list, ",") {
		if strings.Trim(strings.TrimPrefix(strings.TrimSpace(e), "W/"), `"`) == etag {
			return true
		}
	}
	return false
}

func (s *Server) copyObject(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key string) {
	src := r.Header.Get("x-amz-copy-source")
	if i := strings.Index(src, "?"); i >= 0 {
		src = src[:i]
	}
	src, err := url.PathUnescape(src)
	if err != nil {
		writeError(w, r, s3err("InvalidArgument", "x-amz-copy-source is not URL-encoded correctly"))
		return
	}
	sb, sk, ok := strings.Cut(strings.TrimPrefix(src, "/"), "/")
	if !ok || sb == "" || sk == "" {
		writeError(w, r, s3err("InvalidArgument", "x-amz-copy-source must be bucket/key"))
		return
	}
	var replace *objects.PutOptions
	switch d := r.Header.Get("x-amz-metadata-directive"); d {
	case "", "COPY":
		if sb == b && sk == key {
			writeError(w, r, s3err("InvalidRequest", "this copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"))
			return
		}
	case "REPLACE":
		opts, err := putOptions(r)
		if err != nil {
			writeError(w, r, toS3(err))
			return
		}
		opts.ContentMD5 = nil
		replace = &opts
	default:
		writeError(w, r, s3err("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE"))
		return
	}
	if im := r.Header.Get("x-amz-copy-source-if-match"); im != "" {
		si, err := s.obj.Head(ctx, a.tenant, sb, sk)
		if err != nil {
			writeError(w, r, toS3(err))
			return
		}
		if !etagListHas(im, si.ETag) {
			writeError(w, r, s3err("PreconditionFailed", "x-amz-copy-source-if-match did not hold"))
			return
		}
	}
	info, err := s.obj.Copy(ctx, a.tenant, sb, sk, b, key, replace)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	writeXML(w, http.StatusOK, copyObjectResult{LastModified: isoTime(info.LastModified), ETag: `"` + info.ETag + `"`})
}

func (s *Server) deleteObjects(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b string) {
	var req deleteRequest
	if err := xml.NewDecoder(io.LimitReader(r.Body, maxRequestXML)).Decode(&req); err != nil {
		writeError(w, r, toS3(errorOr(err, s3err("MalformedXML", "the XML you provided was not well-formed or did not validate against our published schema"))))
		return
	}
	if len(req.Objects) == 0 || len(req.Objects) > maxDeleteKeys {
		writeError(w, r, s3err("MalformedXML", "name 1 to 1000 objects to delete"))
		return
	}
	if _, err := s.obj.HeadBucket(ctx, a.tenant, b); err != nil {
		writeError(w, r, toS3(err))
		return
	}
	res := deleteResult{}
	for _, o := range req.Objects {
		err := s.obj.Delete(ctx, a.tenant, b, o.Key)
		if err != nil && !errors.Is(err, objects.ErrNoSuchKey) {
			e := toS3(err)
			res.Errors = append(res.Errors, deleteError{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		if !req.Quiet {
			res.Deleted = append(res.Deleted, deletedObject{Key: o.Key})
		}
	}
	writeXML(w, http.StatusOK, res)
}

// errorOr returns err if it is an S3 error (a failed body check), else fallback.
func errorOr(err error, fallback *Error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return fallback
}

// listParams are the parameters common to both list versions.
type listParams struct {
	prefix, delimiter, encoding string
	maxKeys                     int
}

func parseList(q url.Values) (listParams, error) {
	p := listParams{prefix: q.Get("prefix"), delimiter: q.Get("delimiter"), encoding: q.Get("encoding-type"), maxKeys: listDefaultKeys}
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, s3err("InvalidArgument", "max-keys must be a non-negative integer")
		}
		p.maxKeys = min(n, listDefaultKeys)
	}
	if p.encoding != "" && p.encoding != "url" {
		return p, s3err("InvalidArgument", "encoding-type must be url")
	}
	return p, nil
}

func (p listParams) enc(s string) string {
	if p.encoding == "url" {
		return awsEscape(s, true)
	}
	return s
}

func (s *Server) list(ctx context.Context, a auth, b string, p listParams, after string) (objects.ListResult, error) {
	if p.maxKeys == 0 {
		if _, err := s.obj.HeadBucket(ctx, a.tenant, b); err != nil {
			return objects.ListResult{}, err
		}
		return objects.ListResult{}, nil
	}
	return s.obj.List(ctx, a.tenant, b, objects.ListOptions{Prefix: p.prefix, Delimiter: p.delimiter, After: after, Max: p.maxKeys})
}

func (s *Server) contents(p listParams, res objects.ListResult, owner *owner) ([]object, []commonPrefix) {
	objs := make([]object, 0, len(res.Objects))
	for _, o := range res.Objects {
		objs = append(objs, object{Key: p.enc(o.Key), LastModified: isoTime(o.LastModified), ETag: `"` + o.ETag + `"`, Size: o.Size, StorageClass: "STANDARD", Owner: owner})
	}
	var cps []commonPrefix
	for _, c := range res.CommonPrefixes {
		cps = append(cps, commonPrefix{Prefix: p.enc(c)})
	}
	return objs, cps
}

func (s *Server) listObjectsV2(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b string) {
	q := r.URL.Query()
	p, err := parseList(q)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	after := q.Get("start-after")
	token := q.Get("continuation-token")
	if _, ok := q["continuation-token"]; ok {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || token == "" {
			writeError(w, r, s3err("InvalidArgument", "the continuation token provided is incorrect"))
			return
		}
		after = string(raw)
	}
	res, err := s.list(ctx, a, b, p, after)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	var ow *owner
	if q.Get("fetch-owner") == "true" {
		ow = &owner{ID: a.tenant, DisplayName: a.tenant}
	}
	objs, cps := s.contents(p, res, ow)
	out := listBucketResultV2{
		Name: b, Prefix: p.enc(p.prefix), StartAfter: p.enc(q.Get("start-after")), ContinuationToken: token,
		KeyCount: len(objs) + len(cps), MaxKeys: p.maxKeys, Delimiter: p.enc(p.delimiter), EncodingType: p.encoding,
		IsTruncated: res.IsTruncated, Contents: objs, CommonPrefixes: cps,
	}
	if res.IsTruncated {
		out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(res.NextAfter))
	}
	writeXML(w, http.StatusOK, out)
}

func (s *Server) listObjectsV1(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b string) {
	q := r.URL.Query()
	p, err := parseList(q)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	res, err := s.list(ctx, a, b, p, q.Get("marker"))
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	objs, cps := s.contents(p, res, &owner{ID: a.tenant, DisplayName: a.tenant})
	out := listBucketResultV1{
		Name: b, Prefix: p.enc(p.prefix), Marker: p.enc(q.Get("marker")), MaxKeys: p.maxKeys, Delimiter: p.enc(p.delimiter),
		EncodingType: p.encoding, IsTruncated: res.IsTruncated, Contents: objs, CommonPrefixes: cps,
	}
	if res.IsTruncated {
		out.NextMarker = p.enc(res.NextAfter)
	}
	writeXML(w, http.StatusOK, out)
}

func (s *Server) createUpload(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key string) {
	opts, err := putOptions(r)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	opts.ContentMD5 = nil
	u, err := s.obj.CreateUpload(ctx, a.tenant, b, key, opts)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	writeXML(w, http.StatusOK, initiateMultipartUploadResult{Bucket: b, Key: key, UploadID: u.UploadID})
}

func (s *Server) uploadPart(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key, id, num string) {
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 10000 {
		writeError(w, r, s3err("InvalidArgument", "part number must be an integer between 1 and 10000, inclusive"))
		return
	}
	if err := checkLength(r, min(s.obj.MaxObjectBytes(), maxPartBytes)); err != nil {
		writeError(w, r, toS3(err))
		return
	}
	opts, err := putOptions(r)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	p, err := s.obj.UploadPart(ctx, a.tenant, b, key, id, n, r.Body, opts.ContentMD5)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	w.Header().Set("ETag", `"`+p.ETag+`"`)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) completeUpload(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key, id string) {
	var req completeMultipartUpload
	if err := xml.NewDecoder(io.LimitReader(r.Body, maxRequestXML)).Decode(&req); err != nil {
		writeError(w, r, toS3(errorOr(err, s3err("MalformedXML", "the XML you provided was not well-formed or did not validate against our published schema"))))
		return
	}
	if len(req.Parts) == 0 {
		writeError(w, r, s3err("MalformedXML", "you must specify at least one part"))
		return
	}
	list := make([]objects.CompletedPart, len(req.Parts))
	for i, p := range req.Parts {
		list[i] = objects.CompletedPart{Number: p.PartNumber, ETag: p.ETag}
	}
	info, err := s.obj.CompleteUpload(ctx, a.tenant, b, key, id, list)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	writeXML(w, http.StatusOK, completeMultipartUploadResult{
		Location: scheme + "://" + r.Host + "/" + b + "/" + awsEscape(key, true), Bucket: b, Key: key, ETag: `"` + info.ETag + `"`,
	})
}

func (s *Server) listParts(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key, id string) {
	q := r.URL.Query()
	marker, _ := strconv.Atoi(q.Get("part-number-marker"))
	max := 1000
	if v := q.Get("max-parts"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < max {
			max = n
		}
	}
	ps, err := s.obj.ListParts(ctx, a.tenant, b, key, id)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	out := listPartsResult{Bucket: b, Key: key, UploadID: id, PartNumberMarker: marker, MaxParts: max, StorageClass: "STANDARD"}
	for _, p := range ps {
		if p.Number <= marker {
			continue
		}
		if len(out.Parts) == max {
			out.IsTruncated = true
			break
		}
		out.Parts = append(out.Parts, part{PartNumber: p.Number, LastModified: isoTime(p.LastModified), ETag: `"` + p.ETag + `"`, Size: p.Size})
		out.NextPartNumberMarker = p.Number
	}
	writeXML(w, http.StatusOK, out)
}

func (s *Server) listUploads(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b string) {
	q := r.URL.Query()
	ups, err := s.obj.ListUploads(ctx, a.tenant, b)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	prefix := q.Get("prefix")
	out := listMultipartUploadsResult{Bucket: b, Prefix: prefix, MaxUploads: 1000, KeyMarker: q.Get("key-marker"), UploadIDMarker: q.Get("upload-id-marker")}
	for _, u := range ups {
		if !strings.HasPrefix(u.Key, prefix) || u.Key <= out.KeyMarker && out.KeyMarker != "" {
			continue
		}
		if len(out.Uploads) == out.MaxUploads {
			out.IsTruncated = true
			break
		}
		out.Uploads = append(out.Uploads, upload{Key: u.Key, UploadID: u.UploadID, Initiated: isoTime(u.Initiated), StorageClass: "STANDARD"})
		out.NextKeyMarker, out.NextUploadIDMarker = u.Key, u.UploadID
	}
	writeXML(w, http.StatusOK, out)
}
