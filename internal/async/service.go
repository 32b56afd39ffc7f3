package async

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Defaults of Config and of a version's async settings.
const (
	DefaultMaxPayload      = 1 << 20
	DefaultStreamMaxMsgs   = 1_000_000
	DefaultStreamMaxBytes  = 1 << 30
	DefaultDuplicateWindow = 5 * time.Minute
	DefaultBackoffBase     = time.Second
	DefaultAckWait         = time.Minute
	DefaultConcurrency     = 4
	MaxConcurrency         = 256
	DefaultRetries         = 2
	DefaultMaxAge          = 6 * time.Hour
	DefaultResultTTL       = 24 * time.Hour
	DefaultDeadLetterAge   = 14 * 24 * time.Hour
	// MaxIdempotencyKey is the longest Idempotency-Key accepted, in bytes.
	MaxIdempotencyKey = 256
	// MaxResultBody is the most of a response body kept in an invocation's status.
	MaxResultBody = 256 << 10
)

// Config wires a Service. Zero values mean the defaults above.
type Config struct {
	Bus     *bus.Bus
	Invoker Invoker
	// Topics receives "topic:NAME" destinations; nil refuses them (logged).
	Topics TopicPublisher
	Node   string
	Logger *slog.Logger
	// MaxPayload is the largest async request body (1 MB).
	MaxPayload int64
	// StreamMaxMsgs and StreamMaxBytes bound the work queue; beyond them new
	// invocations are refused with 429.
	StreamMaxMsgs  int64
	StreamMaxBytes int64
	// DuplicateWindow is how long an Idempotency-Key or a trigger's event id
	// de-duplicates (5 min).
	DuplicateWindow time.Duration
	// BackoffBase is the delay before the first retry; it doubles each retry (1 s).
	BackoffBase time.Duration
	// AckWait is how long a node may hold a delivered invocation without a sign
	// of life before JetStream gives it to another node (1 min; running
	// invocations signal progress every AckWait/3).
	AckWait time.Duration
	// DefaultConcurrency is the per-node limit of concurrent async invocations
	// of a function whose version does not set scale.max (4).
	DefaultConcurrency int
	// ScanInterval is how often the node looks for functions with queued
	// invocations and no worker (1 s).
	ScanInterval time.Duration
	// DeadLetterMaxAge is how long dead letters are kept (14 days).
	DeadLetterMaxAge time.Duration
	// Replicas overrides the bus's replica count for the streams (0 = bus).
	Replicas int
	// CallbackLoopback lets result callbacks (X-Callback-Url and URL
	// destinations) reach loopback, link-local and unspecified addresses.
	// Off, a caller cannot make the server POST to its own admin API, a
	// neighbour on 127.0.0.1 or a cloud metadata service (169.254.169.254).
	CallbackLoopback bool
}

func (c *Config) defaults() {
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.StreamMaxMsgs <= 0 {
		c.StreamMaxMsgs = DefaultStreamMaxMsgs
	}
	if c.StreamMaxBytes <= 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.DefaultConcurrency <= 0 {
		c.DefaultConcurrency = DefaultConcurrency
	}
	if c.ScanInterval <= 0 {
		c.ScanInterval = time.Second
	}
	if c.DeadLetterMaxAge <= 0 {
		c.DeadLetterMaxAge = DefaultDeadLetterAge
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Service is the async invocation queue of one node.
type Service struct {
	cfg  Config
	log  *slog.Logger
	js   jetstream.JetStream
	work jetstream.Stream
	dlq  jetstream.Stream
	res  jetstream.KeyValue

	mu      sync.Mutex
	topics  TopicPublisher
	workers map[string]*worker
	ctx     context.Context // lives from Start to Stop
	cancel  context.CancelFunc
	started bool
	wg      sync.WaitGroup

	callbacks chan callback
	cbClient  *http.Client
}

// New builds a Service; Start opens its streams and starts its workers.
func New(cfg Config) *Service {
	cfg.defaults()
	return &Service{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "async"),
		topics:    cfg.Topics,
		workers:   map[string]*worker{},
		callbacks: make(chan callback, 1024),
		cbClient:  newCallbackClient(cfg.CallbackLoopback),
	}
}

// SetTopics sets the publisher of "topic:NAME" destinations (the triggers
// service, which is built after this one).
func (s *Service) SetTopics(p TopicPublisher) {
	s.mu.Lock()
	s.topics = p
	s.mu.Unlock()
}

// Open creates or updates the streams and the results bucket. Start calls it;
// a node that only enqueues (never runs workers) may call Open alone.
func (s *Service) Open(ctx context.Context) error {
	if s.js != nil {
		return nil
	}
	b := s.cfg.Bus
	if b == nil {
		return errors.New("async: no bus configured")
	}
	work, err := b.EnsureStream(ctx, jetstream.StreamConfig{
		Name:        bus.StreamAsync,
		Description: "Nimbus async invocations (work queue)",
		Subjects:    []string{bus.SubjectAsync + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     s.cfg.StreamMaxMsgs,
		MaxBytes:    s.cfg.StreamMaxBytes,
		Duplicates:  s.cfg.DuplicateWindow,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("async: %w", err)
	}
	dlq, err := b.EnsureStream(ctx, jetstream.StreamConfig{
		Name:        bus.StreamDeadLetters,
		Description: "Nimbus dead letters: async events whose attempts ran out",
		Subjects:    []string{bus.SubjectDeadLetters + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      s.cfg.DeadLetterMaxAge,
		Duplicates:  2 * time.Minute,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("async: %w", err)
	}
	res, err := b.OpenKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bus.BucketAsyncResults,
		Description:    "Nimbus async invocation status and results by id",
		History:        1,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: time.Minute,
		Replicas:       s.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("async: %w", err)
	}
	s.js, s.work, s.dlq, s.res = b.JS, work, dlq, res
	return nil
}

// Start opens the streams and runs workers for every function with queued
// invocations, now and as they appear.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Invoker == nil {
		return errors.New("async: no invoker configured")
	}
	if err := s.Open(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("async: already started")
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.started = true
	s.mu.Unlock()
	s.scan(ctx)
	s.wg.Add(1)
	go s.scanLoop()
	for range 4 {
		s.wg.Add(1)
		go s.callbackLoop()
	}
	return nil
}

// Stop stops taking work, lets running invocations finish until ctx ends
// (then cancels them, and they are redelivered later), and waits for every
// goroutine of the service.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return nil
	}
	s.started = false
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	s.workers = map[string]*worker{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop(ctx) }()
	}
	wg.Wait()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Policy is the retry policy of one version.
type Policy struct {
	Attempts  int
	MaxAge    time.Duration
	ResultTTL time.Duration
	base      time.Duration
}

// Backoff is the delay after failed attempt n (1-based).
func (p Policy) Backoff(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	if n > 20 {
		n = 20
	}
	d := p.base << (n - 1)
	if d > time.Hour {
		d = time.Hour
	}
	return d
}

// PolicyOf is the retry policy of version v (nil: the defaults).
func (s *Service) PolicyOf(v *registry.Version) Policy {
	p := Policy{Attempts: DefaultRetries + 1, MaxAge: DefaultMaxAge, ResultTTL: DefaultResultTTL, base: s.cfg.BackoffBase}
	if v == nil {
		return p
	}
	a := v.Config.Async
	if a.Retries != nil && *a.Retries >= 0 {
		p.Attempts = *a.Retries + 1
	}
	if a.MaxAge > 0 {
		p.MaxAge = a.MaxAge.D()
	}
	if a.ResultTTL > 0 {
		p.ResultTTL = a.ResultTTL.D()
	}
	if p.ResultTTL < time.Second {
		p.ResultTTL = time.Second
	}
	return p
}

// Options are per-enqueue settings.
type Options struct {
	// IdempotencyKey de-duplicates within the duplicate window (≤ 256 bytes).
	IdempotencyKey string
	// MsgID is an explicit de-duplication id (triggers: one per tick or event).
	MsgID string
	// Callback is a URL to POST the result to (X-Callback-Url).
	Callback string
	// replay overwrites an existing status (a dead letter queued again).
	replay bool
}

// Enqueue durably queues an HTTP-shaped async invocation and returns its id.
// The body is read fully (at most MaxPayload bytes). The Idempotency-Key and
// X-Callback-Url request headers are honoured. Errors are *apierr.Error: 404
// (no such function), 413, 400, 429 (queue full).
func (s *Service) Enqueue(ctx context.Context, t Target, req *runtime.Request) (string, error) {
	if _, err := s.cfg.Invoker.Resolve(t); err != nil {
		return "", err
	}
	var opt Options
	if req.Header != nil {
		opt.IdempotencyKey = req.Header.Get("Idempotency-Key")
		opt.Callback = req.Header.Get("X-Callback-Url")
	}
	if err := s.checkOptions(opt); err != nil {
		return "", err
	}
	var body []byte
	if req.Body != nil {
		if req.ContentLength > s.cfg.MaxPayload {
			return "", tooLarge(s.cfg.MaxPayload)
		}
		b, err := io.ReadAll(io.LimitReader(req.Body, s.cfg.MaxPayload+1))
		if err != nil {
			return "", apierr.New(apierr.BadRequest, "reading the request body: %v", err)
		}
		if int64(len(b)) > s.cfg.MaxPayload {
			return "", tooLarge(s.cfg.MaxPayload)
		}
		body = b
	}
	method, path := req.Method, req.Path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/"
	}
	j := &Job{
		ID: req.InvocationID, Tenant: t.Tenant, Function: t.Function, Qualifier: t.Qualifier,
		Trigger: "async", Method: method, Path: path, RawQuery: req.RawQuery,
		Header: req.Header.Clone(), Body: body, Callback: opt.Callback,
	}
	return s.enqueue(ctx, j, opt)
}

// EnqueueEvent durably queues an invocation of t with event ev (a trigger
// event) and returns its id. ev.ID defaults to the invocation id and ev.Time
// to now.
func (s *Service) EnqueueEvent(ctx context.Context, t Target, ev Envelope, opt Options) (string, error) {
	if _, err := s.cfg.Invoker.Resolve(t); err != nil {
		return "", err
	}
	if err := s.checkOptions(opt); err != nil {
		return "", err
	}
	if size := len(ev.Data) + len(ev.DataBase64); int64(size) > s.cfg.MaxPayload {
		return "", tooLarge(s.cfg.MaxPayload)
	}
	trig := ev.Kind
	if trig == "" {
		trig = "event"
	}
	j := &Job{Tenant: t.Tenant, Function: t.Function, Qualifier: t.Qualifier, Trigger: trig, Event: &ev, Callback: opt.Callback}
	return s.enqueue(ctx, j, opt)
}

func (s *Service) checkOptions(opt Options) error {
	if len(opt.IdempotencyKey) > MaxIdempotencyKey {
		return apierr.New(apierr.BadRequest, "Idempotency-Key is %d bytes long; use at most %d", len(opt.IdempotencyKey), MaxIdempotencyKey)
	}
	if opt.Callback != "" {
		u, err := url.Parse(opt.Callback)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return apierr.New(apierr.BadRequest, "X-Callback-Url %q is not an http(s) URL", opt.Callback)
		}
		if !s.cfg.CallbackLoopback && !callbackHostAllowed(u.Hostname()) {
			return apierr.New(apierr.BadRequest, "X-Callback-Url %q points at a loopback, link-local or unspecified address, which this server does not call; give an address reachable from outside it (or start the server with --callback-loopback)", opt.Callback)
		}
	}
	return nil
}

// callbackHostAllowed is the early, literal form of the dialer's check: a
// URL naming localhost or a refused IP is a 400 at request time rather than
// a callback silently dropped later.
func callbackHostAllowed(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return callbackAddrAllowed(ip)
	}
	return true
}

func tooLarge(limit int64) error {
	return apierr.New(apierr.PayloadTooLarge, "async payload is larger than %d bytes; send a smaller body or store the data and pass a reference", limit)
}

// idFor derives the invocation id of an idempotent request, so that a
// repeated request answers with the same id.
func idFor(t Target, key string) string {
	h := sha256.Sum256([]byte(t.Tenant + "\x00" + t.Function + "\x00" + key))
	return "idem" + hex.EncodeToString(h[:12])
}

// enqueue writes the queued status, then publishes j with an acknowledgement.
func (s *Service) enqueue(ctx context.Context, j *Job, opt Options) (string, error) {
	if s.js == nil {
		if err := s.Open(ctx); err != nil {
			return "", apierr.New(apierr.Unavailable, "the async queue is not available: %v", err)
		}
	}
	t := j.Target()
	msgID := opt.MsgID
	switch {
	case opt.IdempotencyKey != "":
		j.ID = idFor(t, opt.IdempotencyKey)
		msgID = "idem." + j.ID
	case j.ID == "" && msgID != "":
		h := sha256.Sum256([]byte(t.Tenant + "\x00" + t.Function + "\x00" + msgID))
		j.ID = "ev" + hex.EncodeToString(h[:12])
	case j.ID == "":
		j.ID = nuid.Next()
	}
	if msgID == "" {
		msgID = j.ID
	}
	if j.Event != nil {
		if j.Event.ID == "" {
			j.Event.ID = j.ID
		}
		if j.Event.Time.IsZero() {
			j.Event.Time = time.Now().UTC()
		}
	}
	j.Enqueued = time.Now().UTC()
	data, err := json.Marshal(j)
	if err != nil {
		return "", fmt.Errorf("async: encoding invocation %s: %w", j.ID, err)
	}
	ttl := DefaultResultTTL
	if v, err := s.cfg.Invoker.Resolve(t); err == nil {
		ttl = s.PolicyOf(v).ResultTTL
	}
	// "queued" is written as a create: it never overwrites a worker's
	// "running" that got there first, nor the status of the first request with
	// the same Idempotency-Key.
	st := &Status{ID: j.ID, Tenant: j.Tenant, Function: j.Function, Trigger: j.Trigger, State: StateQueued, Enqueued: j.Enqueued, Node: s.cfg.Node}
	_ = s.putStatus(ctx, st, ttl, !opt.replay)
	msg := &nats.Msg{Subject: bus.Subject(bus.SubjectAsync, j.Tenant, j.Function), Data: data}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(bus.StreamAsync))
	if err != nil {
		if !opt.replay && opt.IdempotencyKey == "" {
			// Remove the "queued" status of the refused invocation (ordered
			// after the create above, on the same connection).
			_, _ = s.js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + bus.BucketAsyncResults + "." + j.ID, Header: nats.Header{"KV-Operation": []string{"PURGE"}, "Nats-Rollup": []string{"sub"}}})
		}
		return "", publishError(j, err)
	}
	if ack.Duplicate {
		s.log.Debug("duplicate async invocation ignored", "id", j.ID, "msg_id", msgID)
	}
	s.kick(j.Tenant, j.Function)
	return j.ID, nil
}

func publishError(j *Job, err error) error {
	var ae *jetstream.APIError
	if errors.As(err, &ae) && strings.Contains(ae.Description, "maximum") {
		e := apierr.New(apierr.TooManyRequests, "the async queue is full (%s); retry later", ae.Description)
		e.Header = http.Header{"Retry-After": []string{"5"}}
		return e
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return apierr.New(apierr.Unavailable, "the async queue did not acknowledge invocation of %q in time; retry", j.Function)
	}
	return apierr.New(apierr.Unavailable, "queueing an invocation of %q: %v", j.Function, err)
}

func workerKey(tenant, fn string) string { return tenant + "." + fn }

// kick makes sure this node runs a worker for the function.
func (s *Service) kick(tenant, fn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return
	}
	k := workerKey(tenant, fn)
	if _, ok := s.workers[k]; ok {
		return
	}
	w := newWorker(s, tenant, fn)
	s.workers[k] = w
	w.start(s.ctx)
}

// scan starts workers for every function with queued invocations.
func (s *Service) scan(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := s.work.Info(ctx, jetstream.WithSubjectFilter(bus.SubjectAsync+".>"))
	if err != nil {
		s.log.Warn("listing queued async invocations", "err", err)
		return
	}
	for subj := range info.State.Subjects {
		toks := strings.Split(subj, ".")
		if len(toks) != 4 {
			continue
		}
		s.kick(toks[2], toks[3])
	}
}

func (s *Service) scanLoop() {
	defer s.wg.Done()
	tk := time.NewTicker(s.cfg.ScanInterval)
	defer tk.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tk.C:
			s.scan(s.ctx)
		}
	}
}
