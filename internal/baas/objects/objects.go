// Package objects owns app files: per-tenant buckets of objects on the
// JetStream object store, with MD5 ETags, user metadata, ranged reads, listing
// with prefix and delimiter, copy, multipart uploads, change events and the
// REST API under /api/v1/objects. The S3-compatible API (internal/compat/s3)
// is a second face of this service.
package objects

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// Names this package adds to the bus.
const (
	// CatalogBucket lists every app bucket (shared with internal/baas/kv).
	CatalogBucket = "nimbus_baas_catalog"
	// UploadsBucket holds multipart uploads in progress.
	UploadsBucket = "nimbus_baas_uploads"
	// PartsStore holds the parts of multipart uploads in progress.
	PartsStore = "nimbus_baas_parts"
	// ChangeStream carries change events (subjects ChangeSubject.>).
	ChangeStream  = bus.StreamChanges
	ChangeSubject = bus.SubjectChanges
)

// Errors of the Go API. REST and S3 map them onto their own error codes.
var (
	ErrInvalidBucketName = errors.New("invalid bucket name")
	ErrInvalidTenant     = errors.New("invalid tenant")
	ErrInvalidKey        = errors.New("invalid object key")
	ErrKeyTooLong        = errors.New("object key too long")
	ErrNoSuchBucket      = errors.New("no such bucket")
	ErrBucketExists      = errors.New("bucket already exists")
	ErrBucketNotEmpty    = errors.New("bucket not empty")
	ErrNoSuchKey         = errors.New("no such key")
	ErrEntityTooLarge    = errors.New("object too large")
	ErrEntityTooSmall    = errors.New("part too small")
	ErrInvalidPart       = errors.New("invalid part")
	ErrInvalidPartOrder  = errors.New("invalid part order")
	ErrNoSuchUpload      = errors.New("no such upload")
	ErrInvalidRange      = errors.New("invalid range")
	ErrBadDigest         = errors.New("bad digest")
	ErrInvalidArgument   = errors.New("invalid argument")
)

// Header names kept on every stored object.
const (
	hdrContentType = "Content-Type"
	hdrETag        = "Nimbus-Etag"
)

// Config configures the service.
type Config struct {
	Bus    *bus.Bus
	Logger *slog.Logger
	// MaxObjectBytes caps one object (default 5 GiB, as S3's single PUT).
	MaxObjectBytes int64
	// MinPartBytes is the smallest part of a multipart upload but the last (default 5 MiB).
	MinPartBytes int64
	// MaxParts is the most parts of one upload (default 10,000).
	MaxParts int
	// ChangeMaxAge is how long change events stay in the stream (default 7 days).
	ChangeMaxAge time.Duration
	// UploadMaxAge discards multipart uploads not completed within it (default 7 days).
	UploadMaxAge time.Duration
}

// BucketInfo describes a bucket.
type BucketInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Bucket       string            `json:"bucket"`
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"` // hex MD5, or md5-of-md5s-N for multipart
	ContentType  string            `json:"content_type"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	LastModified time.Time         `json:"last_modified"`
}

// PutOptions describe an object being written.
type PutOptions struct {
	ContentType string
	// Metadata is user metadata; keys are stored lower-case.
	Metadata map[string]string
	// ContentMD5, when set, must equal the MD5 of the content (else ErrBadDigest).
	ContentMD5 []byte
}

// Service is the object storage service.
type Service struct {
	cfg     Config
	log     *slog.Logger
	catalog jetstream.KeyValue
	uploads jetstream.KeyValue
	parts   jetstream.ObjectStore

	mu     sync.Mutex
	stores map[string]jetstream.ObjectStore
}

// New builds the service; Start opens its buckets and streams.
func New(cfg Config) *Service {
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = 5 << 30
	}
	if cfg.MinPartBytes <= 0 {
		cfg.MinPartBytes = 5 << 20
	}
	if cfg.MaxParts <= 0 {
		cfg.MaxParts = 10000
	}
	if cfg.ChangeMaxAge <= 0 {
		cfg.ChangeMaxAge = 7 * 24 * time.Hour
	}
	if cfg.UploadMaxAge <= 0 {
		cfg.UploadMaxAge = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "objects"), stores: map[string]jetstream.ObjectStore{}}
}

// MaxObjectBytes is the configured per-object limit.
func (s *Service) MaxObjectBytes() int64 { return s.cfg.MaxObjectBytes }

// Start opens the catalog, the multipart state and the change stream.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Bus == nil {
		return errors.New("objects: a bus is required")
	}
	var err error
	if s.catalog, err = s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: CatalogBucket, Description: "Nimbus app buckets (kv and objects)"}); err != nil {
		return fmt.Errorf("objects: %w", err)
	}
	if s.uploads, err = s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: UploadsBucket, Description: "Nimbus multipart uploads in progress", TTL: s.cfg.UploadMaxAge}); err != nil {
		return fmt.Errorf("objects: %w", err)
	}
	if s.parts, err = s.cfg.Bus.ObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: PartsStore, Description: "Nimbus multipart upload parts", TTL: s.cfg.UploadMaxAge}); err != nil {
		return fmt.Errorf("objects: %w", err)
	}
	if err := ensureChangeStream(ctx, s.cfg.Bus, s.cfg.ChangeMaxAge); err != nil {
		return fmt.Errorf("objects: %w", err)
	}
	return nil
}

// Stop releases nothing today (the service owns no goroutines); it exists for
// the common lifecycle.
func (s *Service) Stop(context.Context) error { return nil }

func ensureChangeStream(ctx context.Context, b *bus.Bus, maxAge time.Duration) error {
	if _, err := b.JS.Stream(ctx, ChangeStream); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", ChangeStream, err)
	}
	_, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:        ChangeStream,
		Description: "Nimbus app data change events (kv and objects)",
		Subjects:    []string{ChangeSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      maxAge,
		Replicas:    b.Replicas(),
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("stream %s: %w", ChangeStream, err)
	}
	return nil
}

func checkNames(tenant, bucket string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	return CheckBucketName(bucket)
}

// CreateBucket creates tenant's bucket.
func (s *Service) CreateBucket(ctx context.Context, tenant, bucket string) (BucketInfo, error) {
	if err := checkNames(tenant, bucket); err != nil {
		return BucketInfo{}, err
	}
	info := BucketInfo{Name: bucket, Created: time.Now().UTC().Truncate(time.Millisecond)}
	data, _ := json.Marshal(info)
	ck := catalogKey(tenant, bucket)
	if _, err := s.catalog.Create(ctx, ck, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return BucketInfo{}, fmt.Errorf("%w: %q", ErrBucketExists, bucket)
		}
		return BucketInfo{}, fmt.Errorf("objects: create bucket %q: %w", bucket, err)
	}
	name := storeName(tenant, bucket)
	st, err := s.cfg.Bus.ObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: name, Description: "Nimbus files of tenant " + tenant + ", bucket " + bucket})
	if err != nil {
		_ = s.catalog.Delete(ctx, ck)
		return BucketInfo{}, fmt.Errorf("objects: create bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	s.stores[name] = st
	s.mu.Unlock()
	return info, nil
}

// DeleteBucket deletes an empty bucket (ErrBucketNotEmpty otherwise) and any
// multipart uploads left in it.
func (s *Service) DeleteBucket(ctx context.Context, tenant, bucket string) error {
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return err
	}
	list, err := st.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("objects: delete bucket %q: %w", bucket, err)
	}
	if len(list) > 0 {
		return fmt.Errorf("%w: bucket %q holds %d objects; delete them first", ErrBucketNotEmpty, bucket, len(list))
	}
	ups, err := s.ListUploads(ctx, tenant, bucket)
	if err != nil {
		return err
	}
	for _, u := range ups {
		_ = s.AbortUpload(ctx, tenant, bucket, u.Key, u.UploadID)
	}
	name := storeName(tenant, bucket)
	s.mu.Lock()
	delete(s.stores, name)
	s.mu.Unlock()
	if err := s.cfg.Bus.JS.DeleteObjectStore(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("objects: delete bucket %q: %w", bucket, err)
	}
	if err := s.catalog.Purge(ctx, catalogKey(tenant, bucket)); err != nil {
		return fmt.Errorf("objects: delete bucket %q from the catalog: %w", bucket, err)
	}
	return nil
}

// ListBuckets lists tenant's buckets by name.
func (s *Service) ListBuckets(ctx context.Context, tenant string) ([]BucketInfo, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	w, err := s.catalog.Watch(ctx, "obj."+tenant+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("objects: list buckets: %w", err)
	}
	defer func() { _ = w.Stop() }()
	out := []BucketInfo{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("objects: list buckets: watch closed")
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
				return out, nil
			}
			var b BucketInfo
			if json.Unmarshal(e.Value(), &b) == nil {
				out = append(out, b)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// HeadBucket returns a bucket's description or ErrNoSuchBucket.
func (s *Service) HeadBucket(ctx context.Context, tenant, bucket string) (BucketInfo, error) {
	if err := checkNames(tenant, bucket); err != nil {
		return BucketInfo{}, err
	}
	e, err := s.catalog.Get(ctx, catalogKey(tenant, bucket))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return BucketInfo{}, fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
		}
		return BucketInfo{}, fmt.Errorf("objects: bucket %q: %w", bucket, err)
	}
	var b BucketInfo
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		return BucketInfo{}, fmt.Errorf("objects: bucket %q catalog entry: %w", bucket, err)
	}
	return b, nil
}

func (s *Service) open(ctx context.Context, tenant, bucket string) (jetstream.ObjectStore, error) {
	if err := checkNames(tenant, bucket); err != nil {
		return nil, err
	}
	name := storeName(tenant, bucket)
	s.mu.Lock()
	st := s.stores[name]
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := s.cfg.Bus.JS.ObjectStore(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
		}
		return nil, fmt.Errorf("objects: open bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	s.stores[name] = st
	s.mu.Unlock()
	return st, nil
}

// mapErr maps JetStream errors on an object; a bucket deleted elsewhere drops
// its cached handle.
func (s *Service) mapErr(tenant, bucket, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return fmt.Errorf("%w: %q in bucket %q", ErrNoSuchKey, key, bucket)
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		s.mu.Lock()
		delete(s.stores, storeName(tenant, bucket))
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
	}
	for _, known := range []error{ErrEntityTooLarge, ErrBadDigest, ErrInvalidKey, ErrKeyTooLong, ErrNoSuchBucket, ErrNoSuchKey, ErrInvalidArgument} {
		if errors.Is(err, known) {
			return err
		}
	}
	return fmt.Errorf("objects: %q in bucket %q: %w", key, bucket, err)
}

// hashingReader counts and MD5-hashes what it passes on, refuses to pass more
// than max bytes, and at EOF checks the expected digest and records the ETag
// in the object's headers. The object store marshals those headers into the
// object's metadata only after it has read EOF, so the ETag lands in the same
// metadata write as the object itself.
type hashingReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64
	max     int64
	wantMD5 []byte
	hdr     nats.Header // written at EOF unless etag is preset
	etag    string      // preset ETag (multipart)
	err     error
}

func (h *hashingReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	h.h.Write(p[:n])
	if h.n > h.max {
		h.err = fmt.Errorf("%w: the object is larger than the limit of %d bytes", ErrEntityTooLarge, h.max)
		return 0, h.err
	}
	if err == io.EOF {
		sum := h.h.Sum(nil)
		if h.wantMD5 != nil && !bytes.Equal(sum, h.wantMD5) {
			h.err = fmt.Errorf("%w: Content-MD5 does not match the content", ErrBadDigest)
			return 0, h.err
		}
		if h.etag == "" {
			h.hdr.Set(hdrETag, hex.EncodeToString(sum))
		}
	}
	return n, err
}

// put writes an object; etag presets the ETag (multipart) instead of the MD5.
func (s *Service) put(ctx context.Context, st jetstream.ObjectStore, tenant, bucket, key string, r io.Reader, opts PutOptions, etag string, max int64) (ObjectInfo, error) {
	hdr := nats.Header{}
	ct := opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	hdr.Set(hdrContentType, ct)
	if etag != "" {
		hdr.Set(hdrETag, etag)
	}
	meta := make(map[string]string, len(opts.Metadata))
	for k, v := range opts.Metadata {
		meta[strings.ToLower(k)] = v
	}
	hr := &hashingReader{r: r, h: md5.New(), max: max, wantMD5: opts.ContentMD5, hdr: hdr, etag: etag}
	oi, err := st.Put(ctx, jetstream.ObjectMeta{Name: key, Headers: hdr, Metadata: meta}, hr)
	if err != nil {
		if hr.err != nil {
			return ObjectInfo{}, hr.err
		}
		return ObjectInfo{}, s.mapErr(tenant, bucket, key, err)
	}
	return toInfo(bucket, oi), nil
}

func toInfo(bucket string, oi *jetstream.ObjectInfo) ObjectInfo {
	info := ObjectInfo{
		Bucket:       bucket,
		Key:          oi.Name,
		Size:         int64(oi.Size),
		LastModified: oi.ModTime.UTC(),
		Metadata:     oi.Metadata,
	}
	if oi.Headers != nil {
		info.ContentType = oi.Headers.Get(hdrContentType)
		info.ETag = oi.Headers.Get(hdrETag)
	}
	if info.ContentType == "" {
		info.ContentType = "application/octet-stream"
	}
	return info
}

// Put stores an object, replacing any object with the same key.
func (s *Service) Put(ctx context.Context, tenant, bucket, key string, r io.Reader, opts PutOptions) (ObjectInfo, error) {
	if err := CheckKey(key); err != nil {
		return ObjectInfo{}, err
	}
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return ObjectInfo{}, err
	}
	info, err := s.put(ctx, st, tenant, bucket, key, r, opts, "", s.cfg.MaxObjectBytes)
	if err != nil {
		return ObjectInfo{}, err
	}
	s.publishChange(ctx, "object.created", tenant, info)
	return info, nil
}

// Head returns an object's description.
func (s *Service) Head(ctx context.Context, tenant, bucket, key string) (ObjectInfo, error) {
	if err := CheckKey(key); err != nil {
		return ObjectInfo{}, err
	}
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return ObjectInfo{}, err
	}
	oi, err := st.GetInfo(ctx, key)
	if err != nil {
		return ObjectInfo{}, s.mapErr(tenant, bucket, key, err)
	}
	return toInfo(bucket, oi), nil
}

// Object is an object being read: its description, the byte range served and
// the content of that range.
type Object struct {
	Info ObjectInfo
	// Start and Length are the range served (the whole object without a range).
	Start, Length int64
	// Ranged is true when a range was asked for.
	Ranged bool
	Body   io.ReadCloser
}

// Get opens an object, or a byte range of it when rng is not nil. The caller
// closes Body.
func (s *Service) Get(ctx context.Context, tenant, bucket, key string, rng *Range) (*Object, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return nil, err
	}
	res, err := st.Get(ctx, key)
	if err != nil {
		return nil, s.mapErr(tenant, bucket, key, err)
	}
	oi, err := res.Info()
	if err != nil {
		_ = res.Close()
		return nil, s.mapErr(tenant, bucket, key, err)
	}
	o := &Object{Info: toInfo(bucket, oi), Length: int64(oi.Size), Body: res}
	if rng != nil {
		start, length, err := rng.Resolve(o.Info.Size)
		if err != nil {
			_ = res.Close()
			return nil, err
		}
		if start > 0 {
			if _, err := io.CopyN(io.Discard, res, start); err != nil {
				_ = res.Close()
				return nil, s.mapErr(tenant, bucket, key, err)
			}
		}
		o.Start, o.Length, o.Ranged = start, length, true
		o.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(res, length), res}
	}
	return o, nil
}

// Delete deletes an object; ErrNoSuchKey when there is none.
func (s *Service) Delete(ctx context.Context, tenant, bucket, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return err
	}
	oi, err := st.GetInfo(ctx, key)
	if err != nil {
		return s.mapErr(tenant, bucket, key, err)
	}
	if err := st.Delete(ctx, key); err != nil {
		return s.mapErr(tenant, bucket, key, err)
	}
	info := toInfo(bucket, oi)
	info.LastModified = time.Now().UTC()
	s.publishChange(ctx, "object.deleted", tenant, info)
	return nil
}

// Copy copies an object. With replace nil the content type and metadata are
// copied too; otherwise replace gives them.
func (s *Service) Copy(ctx context.Context, tenant, srcBucket, srcKey, dstBucket, dstKey string, replace *PutOptions) (ObjectInfo, error) {
	if err := CheckKey(dstKey); err != nil {
		return ObjectInfo{}, err
	}
	src, err := s.Get(ctx, tenant, srcBucket, srcKey, nil)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer src.Body.Close()
	opts := PutOptions{ContentType: src.Info.ContentType, Metadata: src.Info.Metadata}
	if replace != nil {
		opts = *replace
	}
	return s.Put(ctx, tenant, dstBucket, dstKey, src.Body, opts)
}

// ListOptions select a page of a bucket listing.
type ListOptions struct {
	Prefix    string
	Delimiter string
	// After lists only keys after this one (S3's start-after, or the marker of
	// the previous page).
	After string
	// Max is the page size (default and maximum 1000).
	Max int
}

// ListResult is one page of a listing, in key order.
type ListResult struct {
	Objects        []ObjectInfo `json:"objects"`
	CommonPrefixes []string     `json:"common_prefixes,omitempty"`
	IsTruncated    bool         `json:"is_truncated"`
	// NextAfter is the After of the next page when IsTruncated.
	NextAfter string `json:"next_after,omitempty"`
}

// List lists a bucket's objects. With a delimiter, keys that contain it after
// the prefix are rolled up into CommonPrefixes.
func (s *Service) List(ctx context.Context, tenant, bucket string, opts ListOptions) (ListResult, error) {
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return ListResult{}, err
	}
	if opts.Max <= 0 || opts.Max > 1000 {
		opts.Max = 1000
	}
	all, err := st.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return ListResult{}, s.mapErr(tenant, bucket, "", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	res := ListResult{Objects: []ObjectInfo{}}
	count := 0
	lastPrefix := ""
	for _, oi := range all {
		k := oi.Name
		if !strings.HasPrefix(k, opts.Prefix) || k <= opts.After {
			continue
		}
		if opts.Delimiter != "" {
			if i := strings.Index(k[len(opts.Prefix):], opts.Delimiter); i >= 0 {
				cp := k[:len(opts.Prefix)+i+len(opts.Delimiter)]
				if cp == lastPrefix || cp == opts.After {
					continue
				}
				if count == opts.Max {
					res.IsTruncated = true
					break
				}
				lastPrefix = cp
				res.CommonPrefixes = append(res.CommonPrefixes, cp)
				res.NextAfter = cp
				count++
				continue
			}
		}
		if count == opts.Max {
			res.IsTruncated = true
			break
		}
		res.Objects = append(res.Objects, toInfo(bucket, oi))
		res.NextAfter = k
		count++
	}
	if !res.IsTruncated {
		res.NextAfter = ""
	}
	return res, nil
}

// ChangeEvent is what every object create and delete publishes.
type ChangeEvent struct {
	Kind        string    `json:"kind"` // object.created or object.deleted
	Tenant      string    `json:"tenant"`
	Bucket      string    `json:"bucket"`
	Key         string    `json:"key"`
	Size        int64     `json:"size"`
	ETag        string    `json:"etag"`
	ContentType string    `json:"content_type"`
	Time        time.Time `json:"time"`
}

// ChangeSubjectFor is the subject of tenant's bucket's change events.
func ChangeSubjectFor(tenant, bucket string) string {
	return ChangeSubject + "." + tenant + ".objects." + bucket
}

func (s *Service) publishChange(ctx context.Context, kind, tenant string, info ObjectInfo) {
	data, _ := json.Marshal(ChangeEvent{Kind: kind, Tenant: tenant, Bucket: info.Bucket, Key: info.Key, Size: info.Size, ETag: info.ETag, ContentType: info.ContentType, Time: time.Now().UTC()})
	if _, err := s.cfg.Bus.JS.Publish(ctx, ChangeSubjectFor(tenant, info.Bucket), data); err != nil {
		s.log.Error("change event not published", "tenant", tenant, "bucket", info.Bucket, "key", info.Key, "kind", kind, "error", err)
	}
}
