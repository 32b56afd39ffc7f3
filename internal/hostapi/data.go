package hostapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
)

// kvErr classifies an error of the kv service.
func kvErr(op, bucket, key string, err error) error {
	k := Internal
	switch {
	case errors.Is(err, kv.ErrNotFound), errors.Is(err, kv.ErrNoSuchBucket):
		k = NotFound
	case errors.Is(err, kv.ErrTooLarge):
		k = TooLarge
	case errors.Is(err, kv.ErrInvalidName), errors.Is(err, kv.ErrInvalidKey), errors.Is(err, kv.ErrInvalidValue),
		errors.Is(err, kv.ErrInvalidOptions), errors.Is(err, kv.ErrRevisionMismatch):
		k = BadInput
	}
	what := fmt.Sprintf("bucket %q", bucket)
	if key != "" {
		what = fmt.Sprintf("key %q in bucket %q", key, bucket)
	}
	return &Error{Kind: k, Op: op, Message: what + ": " + err.Error(), Err: err}
}

func (h *Host) kvService(op string) (*kv.Service, error) {
	if h.f.s.KV == nil {
		return nil, errorf(Unavailable, op, "key-value data is not configured on this server")
	}
	return h.f.s.KV, nil
}

// KVGet returns the value of key in the tenant's bucket.
func (h *Host) KVGet(ctx context.Context, bucket, key string) ([]byte, error) {
	const op = "kv_get"
	s, err := h.kvService(op)
	if err != nil {
		return nil, err
	}
	e, err := s.Get(ctx, h.tenant, bucket, key)
	if err != nil {
		return nil, kvErr(op, bucket, key, err)
	}
	return e.Value, nil
}

// KVPut stores value (a JSON document) under key and returns its revision. A
// bucket that does not exist yet is created with default options.
func (h *Host) KVPut(ctx context.Context, bucket, key string, value []byte) (uint64, error) {
	const op = "kv_put"
	s, err := h.kvService(op)
	if err != nil {
		return 0, err
	}
	rev, err := s.Put(ctx, h.tenant, bucket, key, value, kv.Condition{})
	if errors.Is(err, kv.ErrNoSuchBucket) {
		if _, cerr := s.CreateBucket(ctx, h.tenant, bucket, kv.BucketOptions{}); cerr != nil && !errors.Is(cerr, kv.ErrBucketExists) {
			return 0, kvErr(op, bucket, "", cerr)
		}
		rev, err = s.Put(ctx, h.tenant, bucket, key, value, kv.Condition{})
	}
	if err != nil {
		return 0, kvErr(op, bucket, key, err)
	}
	return rev, nil
}

// KVDelete deletes key; deleting a missing key is not an error.
func (h *Host) KVDelete(ctx context.Context, bucket, key string) error {
	const op = "kv_delete"
	s, err := h.kvService(op)
	if err != nil {
		return err
	}
	if _, err := s.Delete(ctx, h.tenant, bucket, key, kv.Condition{}); err != nil {
		return kvErr(op, bucket, key, err)
	}
	return nil
}

// KVList returns the keys of the bucket that start with prefix, in order, at
// most Limits.MaxListKeys of them.
func (h *Host) KVList(ctx context.Context, bucket, prefix string) ([]string, error) {
	const op = "kv_list"
	s, err := h.kvService(op)
	if err != nil {
		return nil, err
	}
	keys := []string{}
	cursor := ""
	for {
		page, err := s.List(ctx, h.tenant, bucket, kv.ListOptions{Prefix: prefix, Limit: 1000, Cursor: cursor})
		if err != nil {
			return nil, kvErr(op, bucket, "", err)
		}
		for _, e := range page.Items {
			if len(keys) == h.f.s.Limits.MaxListKeys {
				return keys, nil
			}
			keys = append(keys, e.Key)
		}
		if page.NextCursor == "" {
			return keys, nil
		}
		cursor = page.NextCursor
	}
}

// objErr classifies an error of the objects service.
func objErr(op, bucket, key string, err error) error {
	k := Internal
	switch {
	case errors.Is(err, objects.ErrNoSuchKey), errors.Is(err, objects.ErrNoSuchBucket):
		k = NotFound
	case errors.Is(err, objects.ErrEntityTooLarge):
		k = TooLarge
	case errors.Is(err, objects.ErrInvalidBucketName), errors.Is(err, objects.ErrInvalidKey),
		errors.Is(err, objects.ErrKeyTooLong), errors.Is(err, objects.ErrInvalidArgument), errors.Is(err, objects.ErrInvalidTenant):
		k = BadInput
	}
	what := fmt.Sprintf("bucket %q", bucket)
	if key != "" {
		what = fmt.Sprintf("object %q in bucket %q", key, bucket)
	}
	return &Error{Kind: k, Op: op, Message: what + ": " + err.Error(), Err: err}
}

func (h *Host) objService(op string) (*objects.Service, error) {
	if h.f.s.Objects == nil {
		return nil, errorf(Unavailable, op, "object storage is not configured on this server")
	}
	return h.f.s.Objects, nil
}

// Object is an object read through the host API.
type Object struct {
	Data        []byte
	ContentType string
}

// ObjectGet reads a whole object (at most Limits.MaxObjectBytes).
func (h *Host) ObjectGet(ctx context.Context, bucket, key string) (Object, error) {
	const op = "object_get"
	s, err := h.objService(op)
	if err != nil {
		return Object{}, err
	}
	o, err := s.Get(ctx, h.tenant, bucket, key, nil)
	if err != nil {
		return Object{}, objErr(op, bucket, key, err)
	}
	defer o.Body.Close()
	max := h.f.s.Limits.MaxObjectBytes
	if o.Info.Size > max {
		return Object{}, errorf(TooLarge, op, "object %q in bucket %q is %d bytes; the host API reads at most %d (use the objects REST or S3 API)", key, bucket, o.Info.Size, max)
	}
	buf := bytes.NewBuffer(make([]byte, 0, o.Info.Size))
	if _, err := io.Copy(buf, io.LimitReader(o.Body, max+1)); err != nil {
		return Object{}, objErr(op, bucket, key, err)
	}
	if int64(buf.Len()) > max {
		return Object{}, errorf(TooLarge, op, "object %q in bucket %q is over %d bytes", key, bucket, max)
	}
	return Object{Data: buf.Bytes(), ContentType: o.Info.ContentType}, nil
}

// ObjectPut stores an object, replacing one with the same key. A bucket that
// does not exist yet is created.
func (h *Host) ObjectPut(ctx context.Context, bucket, key string, data []byte, contentType string) error {
	const op = "object_put"
	s, err := h.objService(op)
	if err != nil {
		return err
	}
	if max := h.f.s.Limits.MaxObjectBytes; int64(len(data)) > max {
		return errorf(TooLarge, op, "object %q is %d bytes; the host API writes at most %d", key, len(data), max)
	}
	opts := objects.PutOptions{ContentType: contentType}
	_, err = s.Put(ctx, h.tenant, bucket, key, bytes.NewReader(data), opts)
	if errors.Is(err, objects.ErrNoSuchBucket) {
		if _, cerr := s.CreateBucket(ctx, h.tenant, bucket); cerr != nil && !errors.Is(cerr, objects.ErrBucketExists) {
			return objErr(op, bucket, "", cerr)
		}
		_, err = s.Put(ctx, h.tenant, bucket, key, bytes.NewReader(data), opts)
	}
	if err != nil {
		return objErr(op, bucket, key, err)
	}
	return nil
}

// ObjectDelete deletes an object (NotFound when there is none).
func (h *Host) ObjectDelete(ctx context.Context, bucket, key string) error {
	const op = "object_delete"
	s, err := h.objService(op)
	if err != nil {
		return err
	}
	if err := s.Delete(ctx, h.tenant, bucket, key); err != nil {
		return objErr(op, bucket, key, err)
	}
	return nil
}

// ObjectList returns the keys of the bucket that start with prefix, in order,
// at most Limits.MaxListKeys of them.
func (h *Host) ObjectList(ctx context.Context, bucket, prefix string) ([]string, error) {
	const op = "object_list"
	s, err := h.objService(op)
	if err != nil {
		return nil, err
	}
	keys := []string{}
	after := ""
	for {
		res, err := s.List(ctx, h.tenant, bucket, objects.ListOptions{Prefix: prefix, After: after})
		if err != nil {
			return nil, objErr(op, bucket, "", err)
		}
		for _, o := range res.Objects {
			if len(keys) == h.f.s.Limits.MaxListKeys {
				return keys, nil
			}
			keys = append(keys, o.Key)
		}
		if !res.IsTruncated || res.NextAfter == "" {
			return keys, nil
		}
		after = res.NextAfter
	}
}
