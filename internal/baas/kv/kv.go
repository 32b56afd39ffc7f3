// Package kv owns app data: per-tenant buckets of JSON documents on JetStream
// KV, with compare-and-set, history, prefix listing, watches, change events and
// the REST API under /api/v1/kv.
package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// Names this package adds to the bus (see bus/names.go for the others).
const (
	// CatalogBucket lists every app bucket (kv and objects) with its options.
	CatalogBucket = "nimbus_baas_catalog"
	// ChangeStream carries change events of app data (subjects ChangeSubject.>).
	ChangeStream = bus.StreamChanges
	// ChangeSubject prefixes change subjects: nimbus.change.{tenant}.kv.{bucket}.
	ChangeSubject = bus.SubjectChanges
)

// Errors of the Go API; REST maps them to the apierr catalog.
var (
	ErrInvalidName      = errors.New("invalid name")
	ErrInvalidKey       = errors.New("invalid key")
	ErrInvalidValue     = errors.New("invalid value")
	ErrInvalidOptions   = errors.New("invalid bucket options")
	ErrTooLarge         = errors.New("value too large")
	ErrNoSuchBucket     = errors.New("no such bucket")
	ErrBucketExists     = errors.New("bucket already exists")
	ErrNotFound         = errors.New("key not found")
	ErrRevisionMismatch = errors.New("revision mismatch")
)

// Config configures the service.
type Config struct {
	Bus    *bus.Bus
	Logger *slog.Logger
	// MaxValueBytes caps every value (default 1 MB); a bucket may lower it.
	MaxValueBytes int
	// ChangeMaxAge is how long change events stay in the stream (default 7 days).
	ChangeMaxAge time.Duration
}

// BucketOptions are the options a bucket is created with.
type BucketOptions struct {
	// History is how many revisions of each key are kept (1..64, default 1).
	History int `json:"history,omitempty"`
	// TTL expires keys this long after their last write ("1h"); 0 keeps them.
	TTL Duration `json:"ttl,omitempty"`
	// MaxValueBytes caps values in this bucket (default and maximum: the service's).
	MaxValueBytes int `json:"max_value_bytes,omitempty"`
}

// Duration is a time.Duration that reads and writes as "1h30m" in JSON.
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1h", or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string like \"1h\" or a number of seconds")
		}
		*d = Duration(time.Duration(n * float64(time.Second)))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// BucketInfo describes a bucket.
type BucketInfo struct {
	Name    string        `json:"name"`
	Created time.Time     `json:"created"`
	Options BucketOptions `json:"options"`
}

// Entry is one revision of a key.
type Entry struct {
	Key      string          `json:"key"`
	Revision uint64          `json:"revision"`
	Value    json.RawMessage `json:"value,omitempty"`
	Time     time.Time       `json:"time"`
	// Op is "put" or "delete".
	Op string `json:"op,omitempty"`
}

// Condition makes a write conditional. The zero value writes unconditionally.
type Condition struct {
	// IfRevision, when not 0, writes only if the key's latest revision is this one.
	IfRevision uint64
	// IfAbsent writes only if the key does not exist (or was deleted).
	IfAbsent bool
}

// ListOptions select a page of keys.
type ListOptions struct {
	Prefix string
	// Limit is the page size (default 100, maximum 1000).
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
}

// Page is one page of a listing, ordered by key.
type Page struct {
	Items      []Entry `json:"items"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// Service is the KV service.
type Service struct {
	cfg     Config
	log     *slog.Logger
	catalog jetstream.KeyValue

	mu      sync.Mutex
	buckets map[string]jetstream.KeyValue // stream name → handle

	stopCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// New builds the service; Start opens its buckets and streams.
func New(cfg Config) *Service {
	if cfg.MaxValueBytes <= 0 {
		cfg.MaxValueBytes = 1 << 20
	}
	if cfg.ChangeMaxAge <= 0 {
		cfg.ChangeMaxAge = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "kv"),
		buckets: map[string]jetstream.KeyValue{},
		stopCtx: ctx,
		stop:    cancel,
	}
}

// Start opens the catalog bucket and the change stream.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Bus == nil {
		return errors.New("kv: a bus is required")
	}
	cat, err := s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: CatalogBucket, Description: "Nimbus app buckets (kv and objects)"})
	if err != nil {
		return fmt.Errorf("kv: %w", err)
	}
	s.catalog = cat
	if err := EnsureChangeStream(ctx, s.cfg.Bus, s.cfg.ChangeMaxAge); err != nil {
		return fmt.Errorf("kv: %w", err)
	}
	return nil
}

// Stop ends open watches and waits for them.
func (s *Service) Stop(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kv: stop: %w", ctx.Err())
	}
}

// EnsureChangeStream creates the change stream if it does not exist yet and
// leaves an existing one (perhaps configured by the triggers) as it is.
func EnsureChangeStream(ctx context.Context, b *bus.Bus, maxAge time.Duration) error {
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

// CreateBucket creates an app bucket for tenant.
func (s *Service) CreateBucket(ctx context.Context, tenant, bucket string, opts BucketOptions) (BucketInfo, error) {
	if err := s.checkNames(tenant, bucket); err != nil {
		return BucketInfo{}, err
	}
	if opts.History == 0 {
		opts.History = 1
	}
	if opts.History < 1 || opts.History > 64 {
		return BucketInfo{}, fmt.Errorf("%w: history must be between 1 and 64, not %d", ErrInvalidOptions, opts.History)
	}
	if opts.TTL < 0 {
		return BucketInfo{}, fmt.Errorf("%w: ttl must not be negative", ErrInvalidOptions)
	}
	if opts.TTL > 0 && time.Duration(opts.TTL) < time.Second {
		return BucketInfo{}, fmt.Errorf("%w: ttl must be at least 1s", ErrInvalidOptions)
	}
	if opts.MaxValueBytes == 0 {
		opts.MaxValueBytes = s.cfg.MaxValueBytes
	}
	if opts.MaxValueBytes < 1 || opts.MaxValueBytes > s.cfg.MaxValueBytes {
		return BucketInfo{}, fmt.Errorf("%w: max_value_bytes must be between 1 and %d", ErrInvalidOptions, s.cfg.MaxValueBytes)
	}
	info := BucketInfo{Name: bucket, Created: time.Now().UTC().Truncate(time.Millisecond), Options: opts}
	data, _ := json.Marshal(info)
	ck := catalogKey(tenant, bucket)
	if _, err := s.catalog.Create(ctx, ck, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return BucketInfo{}, fmt.Errorf("%w: bucket %q", ErrBucketExists, bucket)
		}
		return BucketInfo{}, fmt.Errorf("kv: create bucket %q: %w", bucket, err)
	}
	name := streamName(tenant, bucket)
	h, err := s.cfg.Bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       name,
		Description:  "Nimbus app data of tenant " + tenant + ", bucket " + bucket,
		History:      uint8(opts.History),
		TTL:          time.Duration(opts.TTL),
		MaxValueSize: int32(opts.MaxValueBytes),
	})
	if err != nil {
		_ = s.catalog.Delete(ctx, ck)
		return BucketInfo{}, fmt.Errorf("kv: create bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	s.buckets[name] = h
	s.mu.Unlock()
	return info, nil
}

// DeleteBucket deletes a bucket and every key in it.
func (s *Service) DeleteBucket(ctx context.Context, tenant, bucket string) error {
	if err := s.checkNames(tenant, bucket); err != nil {
		return err
	}
	ck := catalogKey(tenant, bucket)
	if _, err := s.catalog.Get(ctx, ck); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
		}
		return fmt.Errorf("kv: delete bucket %q: %w", bucket, err)
	}
	name := streamName(tenant, bucket)
	s.mu.Lock()
	delete(s.buckets, name)
	s.mu.Unlock()
	if err := s.cfg.Bus.JS.DeleteKeyValue(ctx, name); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("kv: delete bucket %q: %w", bucket, err)
	}
	if err := s.catalog.Purge(ctx, ck); err != nil {
		return fmt.Errorf("kv: delete bucket %q from the catalog: %w", bucket, err)
	}
	return nil
}

// ListBuckets lists tenant's buckets by name.
func (s *Service) ListBuckets(ctx context.Context, tenant string) ([]BucketInfo, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	return listCatalog[BucketInfo](ctx, s.catalog, "kv."+tenant+".>")
}

// Bucket returns a bucket's description.
func (s *Service) Bucket(ctx context.Context, tenant, bucket string) (BucketInfo, error) {
	if err := s.checkNames(tenant, bucket); err != nil {
		return BucketInfo{}, err
	}
	e, err := s.catalog.Get(ctx, catalogKey(tenant, bucket))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return BucketInfo{}, fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
		}
		return BucketInfo{}, fmt.Errorf("kv: bucket %q: %w", bucket, err)
	}
	var info BucketInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		return BucketInfo{}, fmt.Errorf("kv: bucket %q catalog entry: %w", bucket, err)
	}
	return info, nil
}

func listCatalog[T any](ctx context.Context, cat jetstream.KeyValue, filter string) ([]T, error) {
	w, err := cat.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kv: list catalog: %w", err)
	}
	defer w.Stop()
	type named struct {
		Name string `json:"name"`
	}
	var out []T
	var names []string
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("kv: list catalog: watch closed")
			}
			if e == nil {
				idx := make([]int, len(out))
				for i := range idx {
					idx[i] = i
				}
				sort.SliceStable(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
				sorted := make([]T, len(out))
				for i, j := range idx {
					sorted[i] = out[j]
				}
				return sorted, nil
			}
			var v T
			var n named
			if json.Unmarshal(e.Value(), &v) != nil || json.Unmarshal(e.Value(), &n) != nil {
				continue
			}
			out = append(out, v)
			names = append(names, n.Name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Service) checkNames(tenant, bucket string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	return checkBucket(bucket)
}

// open returns the handle of tenant's bucket.
func (s *Service) open(ctx context.Context, tenant, bucket string) (jetstream.KeyValue, error) {
	if err := s.checkNames(tenant, bucket); err != nil {
		return nil, err
	}
	name := streamName(tenant, bucket)
	s.mu.Lock()
	h := s.buckets[name]
	s.mu.Unlock()
	if h != nil {
		return h, nil
	}
	h, err := s.cfg.Bus.JS.KeyValue(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
		}
		return nil, fmt.Errorf("kv: open bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	s.buckets[name] = h
	s.mu.Unlock()
	return h, nil
}

// mapErr turns a JetStream error on a key into the service's errors. A bucket
// deleted behind our back drops its cached handle.
func (s *Service) mapErr(tenant, bucket, key string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("%w: %q in bucket %q", ErrNotFound, key, bucket)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%w: key %q in bucket %q has changed", ErrRevisionMismatch, key, bucket)
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		s.mu.Lock()
		delete(s.buckets, streamName(tenant, bucket))
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNoSuchBucket, bucket)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return fmt.Errorf("kv: key %q in bucket %q: %w", key, bucket, err)
}

// Get returns the latest value of key.
func (s *Service) Get(ctx context.Context, tenant, bucket, key string) (Entry, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, err
	}
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return Entry{}, err
	}
	e, err := h.Get(ctx, encodeKey(key))
	if err != nil {
		return Entry{}, s.mapErr(tenant, bucket, key, err)
	}
	return Entry{Key: key, Revision: e.Revision(), Value: e.Value(), Time: e.Created(), Op: "put"}, nil
}

// History returns every kept revision of key, oldest first (deletes included).
func (s *Service) History(ctx context.Context, tenant, bucket, key string) ([]Entry, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return nil, err
	}
	es, err := h.History(ctx, encodeKey(key))
	if err != nil {
		return nil, s.mapErr(tenant, bucket, key, err)
	}
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		out = append(out, toEntry(key, e))
	}
	return out, nil
}

func toEntry(key string, e jetstream.KeyValueEntry) Entry {
	en := Entry{Key: key, Revision: e.Revision(), Time: e.Created(), Op: "put"}
	if e.Operation() == jetstream.KeyValuePut {
		en.Value = e.Value()
	} else {
		en.Op = "delete"
	}
	return en
}

// Put stores value (a JSON document) under key and returns its revision.
func (s *Service) Put(ctx context.Context, tenant, bucket, key string, value []byte, cond Condition) (uint64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if len(value) > s.cfg.MaxValueBytes {
		return 0, fmt.Errorf("%w: the value is %d bytes; the limit is %d", ErrTooLarge, len(value), s.cfg.MaxValueBytes)
	}
	if !json.Valid(value) {
		return 0, fmt.Errorf("%w: the value is not a valid JSON document", ErrInvalidValue)
	}
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return 0, err
	}
	ek := encodeKey(key)
	var rev uint64
	switch {
	case cond.IfAbsent:
		rev, err = h.Create(ctx, ek, value)
	case cond.IfRevision != 0:
		rev, err = h.Update(ctx, ek, value, cond.IfRevision)
	default:
		rev, err = h.Put(ctx, ek, value)
	}
	if err != nil {
		return 0, s.mapErr(tenant, bucket, key, err)
	}
	s.publishChange(ctx, "kv.put", tenant, bucket, key, rev)
	return rev, nil
}

// Delete deletes key (keeping its history) and returns the delete's revision.
// Deleting a key that does not exist is not an error unless cond asks for a
// revision.
func (s *Service) Delete(ctx context.Context, tenant, bucket, key string, cond Condition) (uint64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return 0, err
	}
	// A delete is a message with the KV-Operation: DEL header on the key's
	// subject (as jetstream.KeyValue.Delete sends it); publishing it here
	// gives us the revision for the change event.
	m := nats.NewMsg("$KV." + h.Bucket() + "." + encodeKey(key))
	m.Header.Set("KV-Operation", "DEL")
	if cond.IfRevision != 0 {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(cond.IfRevision, 10))
	}
	ack, err := s.cfg.Bus.JS.PublishMsg(ctx, m)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return 0, fmt.Errorf("%w: key %q in bucket %q has changed", ErrRevisionMismatch, key, bucket)
		}
		return 0, s.mapErr(tenant, bucket, key, err)
	}
	s.publishChange(ctx, "kv.deleted", tenant, bucket, key, ack.Sequence)
	return ack.Sequence, nil
}

// List returns a page of keys with their values, ordered by key.
func (s *Service) List(ctx context.Context, tenant, bucket string, opts ListOptions) (Page, error) {
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	if opts.Limit > 1000 {
		opts.Limit = 1000
	}
	after := ""
	if opts.Cursor != "" {
		k, err := decodeKey(opts.Cursor)
		if err != nil {
			return Page{}, fmt.Errorf("%w: cursor %q is not one this server gave out", ErrInvalidOptions, opts.Cursor)
		}
		after = k
	}
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return Page{}, err
	}
	keys, err := s.keys(ctx, tenant, bucket, h, opts.Prefix)
	if err != nil {
		return Page{}, err
	}
	start := 0
	if after != "" {
		start = sort.SearchStrings(keys, after)
		if start < len(keys) && keys[start] == after {
			start++
		}
	}
	page := Page{Items: []Entry{}}
	i := start
	for ; i < len(keys) && len(page.Items) < opts.Limit; i++ {
		e, err := h.Get(ctx, encodeKey(keys[i]))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return Page{}, s.mapErr(tenant, bucket, keys[i], err)
		}
		page.Items = append(page.Items, Entry{Key: keys[i], Revision: e.Revision(), Value: e.Value(), Time: e.Created()})
	}
	if i < len(keys) && len(page.Items) > 0 {
		page.NextCursor = encodeKey(page.Items[len(page.Items)-1].Key)
	}
	return page, nil
}

// keys lists the live keys of a bucket that start with prefix, sorted.
func (s *Service) keys(ctx context.Context, tenant, bucket string, h jetstream.KeyValue, prefix string) ([]string, error) {
	l, err := h.ListKeys(ctx)
	if err != nil {
		return nil, s.mapErr(tenant, bucket, "", err)
	}
	defer func() { _ = l.Stop() }()
	var keys []string
	for ek := range l.Keys() {
		k, err := decodeKey(ek)
		if err != nil {
			continue // not written by Nimbus
		}
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	// A key written during the listing may be reported twice.
	out := keys[:0]
	for i, k := range keys {
		if i == 0 || k != keys[i-1] {
			out = append(out, k)
		}
	}
	return out, nil
}

// Watch calls fn for every put and delete in bucket whose key starts with
// prefix, from now on, until ctx ends or fn returns an error.
func (s *Service) Watch(ctx context.Context, tenant, bucket, prefix string, fn func(Entry) error) error {
	return s.watch(ctx, tenant, bucket, prefix, nil, fn)
}

// watch is Watch that calls ready, if set, once it watches: a write made
// after ready returns is seen. An error from ready ends the watch.
func (s *Service) watch(ctx context.Context, tenant, bucket, prefix string, ready func() error, fn func(Entry) error) error {
	h, err := s.open(ctx, tenant, bucket)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.stopCtx, cancel)
	defer stop()
	w, err := h.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return s.mapErr(tenant, bucket, "", err)
	}
	defer func() { _ = w.Stop() }()
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				continue
			}
			k, err := decodeKey(e.Key())
			if err != nil || len(k) < len(prefix) || k[:len(prefix)] != prefix {
				continue
			}
			if err := fn(toEntry(k, e)); err != nil {
				return err
			}
		}
	}
}

// ChangeEvent is what every put and delete publishes on the change stream.
type ChangeEvent struct {
	Kind     string    `json:"kind"` // kv.put or kv.deleted
	Tenant   string    `json:"tenant"`
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	Revision uint64    `json:"revision"`
	Time     time.Time `json:"time"`
}

// ChangeSubjectFor is the subject of tenant's bucket's change events.
func ChangeSubjectFor(tenant, bucket string) string {
	return ChangeSubject + "." + tenant + ".kv." + bucket
}

// publishChange records a change after the write succeeded. The write stands
// even if the event cannot be published; that is logged.
func (s *Service) publishChange(ctx context.Context, kind, tenant, bucket, key string, rev uint64) {
	data, _ := json.Marshal(ChangeEvent{Kind: kind, Tenant: tenant, Bucket: bucket, Key: key, Revision: rev, Time: time.Now().UTC()})
	m := nats.NewMsg(ChangeSubjectFor(tenant, bucket))
	m.Data = data
	// Dedupe a retried publish of the same revision.
	m.Header.Set(jetstream.MsgIDHeader, streamName(tenant, bucket)+":"+strconv.FormatUint(rev, 10))
	if _, err := s.cfg.Bus.JS.PublishMsg(ctx, m); err != nil {
		s.log.Error("change event not published", "tenant", tenant, "bucket", bucket, "key", key, "revision", rev, "error", err)
	}
}
