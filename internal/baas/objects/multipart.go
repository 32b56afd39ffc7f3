package objects

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Multipart uploads: the upload record and one record per part live in the
// uploads KV bucket ({tenant}.{bucket}.{id} and {tenant}.{bucket}.{id}.{n}),
// the parts' bytes as temporary objects in the parts store
// ({tenant}/{bucket}/{id}/{n}). Complete streams the listed parts, in order,
// into the destination bucket, then removes every part and the records.

// Upload is a multipart upload in progress.
type Upload struct {
	Tenant      string            `json:"tenant"`
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	UploadID    string            `json:"upload_id"`
	ContentType string            `json:"content_type,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Initiated   time.Time         `json:"initiated"`
}

// PartInfo describes an uploaded part.
type PartInfo struct {
	Number       int       `json:"part_number"`
	ETag         string    `json:"etag"`
	Size         int64     `json:"size"`
	LastModified time.Time `json:"last_modified"`
}

// CompletedPart names a part in CompleteUpload's list.
type CompletedPart struct {
	Number int
	ETag   string
}

func newUploadID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func partName(tenant, bucket, id string, n int) string {
	return fmt.Sprintf("%s/%s/%s/%05d", tenant, bucket, id, n)
}

// CreateUpload starts a multipart upload of key.
func (s *Service) CreateUpload(ctx context.Context, tenant, bucket, key string, opts PutOptions) (Upload, error) {
	if err := CheckKey(key); err != nil {
		return Upload{}, err
	}
	if _, err := s.open(ctx, tenant, bucket); err != nil {
		return Upload{}, err
	}
	meta := make(map[string]string, len(opts.Metadata))
	for k, v := range opts.Metadata {
		meta[strings.ToLower(k)] = v
	}
	u := Upload{Tenant: tenant, Bucket: bucket, Key: key, UploadID: newUploadID(), ContentType: opts.ContentType, Metadata: meta, Initiated: time.Now().UTC()}
	data, _ := json.Marshal(u)
	if _, err := s.uploads.Create(ctx, uploadKey(tenant, bucket, u.UploadID), data); err != nil {
		return Upload{}, fmt.Errorf("objects: create upload of %q: %w", key, err)
	}
	return u, nil
}

// upload finds an upload of key in tenant's bucket.
func (s *Service) upload(ctx context.Context, tenant, bucket, key, id string) (Upload, error) {
	if err := checkNames(tenant, bucket); err != nil {
		return Upload{}, err
	}
	notFound := fmt.Errorf("%w: upload %q of %q in bucket %q does not exist (completed or aborted?)", ErrNoSuchUpload, id, key, bucket)
	if id == "" || strings.ContainsAny(id, ".*> ") || len(id) > 64 {
		return Upload{}, notFound
	}
	e, err := s.uploads.Get(ctx, uploadKey(tenant, bucket, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Upload{}, notFound
	}
	if err != nil {
		return Upload{}, fmt.Errorf("objects: upload %q: %w", id, err)
	}
	var u Upload
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return Upload{}, fmt.Errorf("objects: upload %q record: %w", id, err)
	}
	if u.Key != key {
		return Upload{}, notFound
	}
	return u, nil
}

// UploadPart stores part n (1..MaxParts) of an upload and returns its ETag.
// Uploading the same part number again replaces it.
func (s *Service) UploadPart(ctx context.Context, tenant, bucket, key, id string, n int, r io.Reader, contentMD5 []byte) (PartInfo, error) {
	if _, err := s.upload(ctx, tenant, bucket, key, id); err != nil {
		return PartInfo{}, err
	}
	if n < 1 || n > s.cfg.MaxParts {
		return PartInfo{}, fmt.Errorf("%w: part number must be between 1 and %d, not %d", ErrInvalidArgument, s.cfg.MaxParts, n)
	}
	max := min(s.cfg.MaxObjectBytes, 5<<30)
	info, err := s.put(ctx, s.parts, tenant, bucket, partName(tenant, bucket, id, n), r, PutOptions{ContentMD5: contentMD5}, "", max)
	if err != nil {
		return PartInfo{}, err
	}
	p := PartInfo{Number: n, ETag: info.ETag, Size: info.Size, LastModified: info.LastModified}
	data, _ := json.Marshal(p)
	if _, err := s.uploads.Put(ctx, uploadKey(tenant, bucket, id)+"."+strconv.Itoa(n), data); err != nil {
		return PartInfo{}, fmt.Errorf("objects: record part %d of upload %q: %w", n, id, err)
	}
	return p, nil
}

// ListParts lists the parts uploaded so far, by number.
func (s *Service) ListParts(ctx context.Context, tenant, bucket, key, id string) ([]PartInfo, error) {
	if _, err := s.upload(ctx, tenant, bucket, key, id); err != nil {
		return nil, err
	}
	return s.partList(ctx, tenant, bucket, id)
}

func (s *Service) partList(ctx context.Context, tenant, bucket, id string) ([]PartInfo, error) {
	es, err := kvList(ctx, s.uploads, uploadKey(tenant, bucket, id)+".*")
	if err != nil {
		return nil, fmt.Errorf("objects: parts of upload %q: %w", id, err)
	}
	parts := make([]PartInfo, 0, len(es))
	for _, e := range es {
		var p PartInfo
		if json.Unmarshal(e.Value(), &p) == nil {
			parts = append(parts, p)
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	return parts, nil
}

// ListUploads lists the uploads in progress in a bucket.
func (s *Service) ListUploads(ctx context.Context, tenant, bucket string) ([]Upload, error) {
	if err := checkNames(tenant, bucket); err != nil {
		return nil, err
	}
	es, err := kvList(ctx, s.uploads, uploadKey(tenant, bucket, "*"))
	if err != nil {
		return nil, fmt.Errorf("objects: uploads in bucket %q: %w", bucket, err)
	}
	ups := make([]Upload, 0, len(es))
	for _, e := range es {
		var u Upload
		if json.Unmarshal(e.Value(), &u) == nil {
			ups = append(ups, u)
		}
	}
	sort.Slice(ups, func(i, j int) bool {
		if ups[i].Key != ups[j].Key {
			return ups[i].Key < ups[j].Key
		}
		return ups[i].Initiated.Before(ups[j].Initiated)
	})
	return ups, nil
}

// kvList returns the live entries of a KV bucket matching filter.
func kvList(ctx context.Context, kv jetstream.KeyValue, filter string) ([]jetstream.KeyValueEntry, error) {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch closed")
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// normETag strips quotes and lower-cases an ETag for comparison.
func normETag(e string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(e), `"`))
}

// CompleteUpload assembles the listed parts, in order, into the object. The
// list must be in ascending part order (ErrInvalidPartOrder) and name uploaded
// parts with their ETags (ErrInvalidPart); every part but the last must be at
// least MinPartBytes (ErrEntityTooSmall). Nothing changes on error.
func (s *Service) CompleteUpload(ctx context.Context, tenant, bucket, key, id string, list []CompletedPart) (ObjectInfo, error) {
	u, err := s.upload(ctx, tenant, bucket, key, id)
	if err != nil {
		return ObjectInfo{}, err
	}
	if len(list) == 0 {
		return ObjectInfo{}, fmt.Errorf("%w: name at least one part", ErrInvalidPart)
	}
	for i := 1; i < len(list); i++ {
		if list[i].Number <= list[i-1].Number {
			return ObjectInfo{}, fmt.Errorf("%w: part %d comes after part %d; list parts in ascending order, each once", ErrInvalidPartOrder, list[i].Number, list[i-1].Number)
		}
	}
	uploaded, err := s.partList(ctx, tenant, bucket, id)
	if err != nil {
		return ObjectInfo{}, err
	}
	byNum := make(map[int]PartInfo, len(uploaded))
	for _, p := range uploaded {
		byNum[p.Number] = p
	}
	st, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return ObjectInfo{}, err
	}
	sums := md5.New()
	var total int64
	for _, c := range list {
		p, ok := byNum[c.Number]
		if !ok {
			return ObjectInfo{}, fmt.Errorf("%w: part %d was not uploaded", ErrInvalidPart, c.Number)
		}
		if normETag(c.ETag) != p.ETag {
			return ObjectInfo{}, fmt.Errorf("%w: part %d has ETag %q, not %q", ErrInvalidPart, c.Number, p.ETag, normETag(c.ETag))
		}
	}
	for i, c := range list {
		p := byNum[c.Number]
		if i < len(list)-1 && p.Size < s.cfg.MinPartBytes {
			return ObjectInfo{}, fmt.Errorf("%w: part %d is %d bytes; every part but the last must be at least %d bytes", ErrEntityTooSmall, c.Number, p.Size, s.cfg.MinPartBytes)
		}
		raw, _ := hex.DecodeString(p.ETag)
		sums.Write(raw)
		total += p.Size
	}
	if total > s.cfg.MaxObjectBytes {
		return ObjectInfo{}, fmt.Errorf("%w: the parts add up to %d bytes; the limit is %d", ErrEntityTooLarge, total, s.cfg.MaxObjectBytes)
	}
	etag := hex.EncodeToString(sums.Sum(nil)) + "-" + strconv.Itoa(len(list))
	pr := &partsReader{ctx: ctx, s: s, names: make([]string, len(list))}
	for i, c := range list {
		pr.names[i] = partName(tenant, bucket, id, c.Number)
	}
	defer pr.Close()
	info, err := s.put(ctx, st, tenant, bucket, key, pr, PutOptions{ContentType: u.ContentType, Metadata: u.Metadata}, etag, s.cfg.MaxObjectBytes)
	if err != nil {
		return ObjectInfo{}, err
	}
	if info.Size != total {
		s.log.Error("multipart object size differs from its parts", "bucket", bucket, "key", key, "size", info.Size, "parts", total)
	}
	s.removeUpload(ctx, tenant, bucket, id, uploaded)
	s.publishChange(ctx, "object.created", tenant, info)
	return info, nil
}

// partsReader reads parts from the parts store one after the other.
type partsReader struct {
	ctx   context.Context
	s     *Service
	names []string
	cur   io.ReadCloser
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.cur == nil {
			if len(p.names) == 0 {
				return 0, io.EOF
			}
			r, err := p.s.parts.Get(p.ctx, p.names[0])
			if err != nil {
				return 0, fmt.Errorf("%w: reading part %s: %v", ErrInvalidPart, p.names[0], err)
			}
			p.cur, p.names = r, p.names[1:]
		}
		n, err := p.cur.Read(b)
		if err == io.EOF {
			_ = p.cur.Close()
			p.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (p *partsReader) Close() {
	if p.cur != nil {
		_ = p.cur.Close()
		p.cur = nil
	}
}

// AbortUpload discards an upload and its parts.
func (s *Service) AbortUpload(ctx context.Context, tenant, bucket, key, id string) error {
	if _, err := s.upload(ctx, tenant, bucket, key, id); err != nil {
		return err
	}
	parts, err := s.partList(ctx, tenant, bucket, id)
	if err != nil {
		return err
	}
	s.removeUpload(ctx, tenant, bucket, id, parts)
	return nil
}

// removeUpload deletes parts and records; failures leave garbage, not wrong data.
func (s *Service) removeUpload(ctx context.Context, tenant, bucket, id string, parts []PartInfo) {
	uk := uploadKey(tenant, bucket, id)
	if err := s.uploads.Purge(ctx, uk); err != nil {
		s.log.Warn("upload record not removed", "upload", id, "error", err)
	}
	for _, p := range parts {
		if err := s.parts.Delete(ctx, partName(tenant, bucket, id, p.Number)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			s.log.Warn("upload part not removed", "upload", id, "part", p.Number, "error", err)
		}
		_ = s.uploads.Purge(ctx, uk+"."+strconv.Itoa(p.Number))
	}
}
