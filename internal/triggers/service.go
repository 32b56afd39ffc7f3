package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// Config wires a Service.
type Config struct {
	Bus     *bus.Bus
	Invoker async.Invoker
	Async   *async.Service
	Logger  *slog.Logger
	Node    string
	// MaxBody bounds a custom route's request body and a queue send (6 MB).
	MaxBody int64
	// AckWait is how long a node may hold an event before JetStream gives it
	// to another node (30 s; running batches signal progress).
	AckWait time.Duration
	// Authorize, when set, decides whether a custom-route request may invoke
	// version v (auth: key / user). Without it, custom routes serve only
	// functions whose auth is public (or unset) and answer 401 for the others.
	Authorize func(r *http.Request, v *registry.Version) error
}

// Service runs the triggers of every tenant on this node.
type Service struct {
	cfg Config
	log *slog.Logger
	kv  jetstream.KeyValue

	mu      sync.Mutex
	running map[string]*runner // by trigger key
	routes  map[string]*Trigger
	mux     *http.ServeMux
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	ready   chan struct{} // closed once the initial triggers are applied
}

type runner struct {
	spec   string
	cancel context.CancelFunc
	done   chan struct{}
}

// New builds a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", "triggers"),
		running: map[string]*runner{}, routes: map[string]*Trigger{},
		mux: http.NewServeMux(), ready: make(chan struct{}),
	}
	if cfg.Async != nil {
		cfg.Async.SetTopics(s)
	}
	return s
}

// Open creates the bucket and streams the triggers use. Start calls it.
func (s *Service) Open(ctx context.Context) error {
	if s.kv != nil {
		return nil
	}
	b := s.cfg.Bus
	if b == nil {
		return errors.New("triggers: no bus configured")
	}
	kv, err := b.OpenKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketTriggers, Description: "Nimbus triggers, topics and queues", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	if _, err := b.EnsureStream(ctx, jetstream.StreamConfig{
		Name: bus.StreamEvents, Description: "Nimbus topic events (CloudEvents)", Subjects: []string{bus.SubjectEvents + ".>"},
		Storage: jetstream.FileStorage, MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, Discard: jetstream.DiscardOld, Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	if _, err := b.EnsureStream(ctx, jetstream.StreamConfig{
		Name: bus.StreamQueues, Description: "Nimbus queues", Subjects: []string{bus.SubjectQueues + ".>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, MaxBytes: 1 << 30, Discard: jetstream.DiscardNew, Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	// The changes stream belongs to whoever emits changes; create it only when
	// missing, so that its owner's configuration wins.
	if _, err := b.JS.Stream(ctx, bus.StreamChanges); errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := b.EnsureStream(ctx, jetstream.StreamConfig{
			Name: bus.StreamChanges, Description: "Nimbus kv and object change events", Subjects: []string{bus.SubjectChanges + ".>"},
			Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour, MaxBytes: 1 << 30, Discard: jetstream.DiscardOld,
		}); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("triggers: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("triggers: stream %s: %w", bus.StreamChanges, err)
	}
	s.kv = kv
	return nil
}

// Start watches the trigger bucket and runs each trigger's worker as
// triggers come and go. It returns once the existing triggers are running.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Invoker == nil || s.cfg.Async == nil {
		return errors.New("triggers: an invoker and the async service are required")
	}
	if err := s.Open(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("triggers: already started")
	}
	s.started = true
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.Unlock()
	w, err := s.kv.WatchAll(s.ctx)
	if err != nil {
		s.cancel()
		return fmt.Errorf("triggers: watching %s: %w", bus.BucketTriggers, err)
	}
	s.wg.Add(1)
	go s.watch(w)
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops every trigger worker and waits for them.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return nil
	}
	s.started = false
	s.cancel()
	rs := s.running
	s.running = map[string]*runner{}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for _, r := range rs {
			<-r.done
		}
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("triggers: stop: %w", ctx.Err())
	}
}

func (s *Service) watch(w jetstream.KeyWatcher) {
	defer s.wg.Done()
	defer func() { _ = w.Stop() }()
	readyOnce := sync.OnceFunc(func() { close(s.ready) })
	defer readyOnce()
	for {
		select {
		case <-s.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				readyOnce()
				continue
			}
			s.onEntry(e)
		}
	}
}

// isTriggerKey reports whether key names a trigger (not a topic, queue or tick).
func isTriggerKey(key string) bool {
	toks := strings.Split(key, ".")
	return len(toks) == 3 && !strings.HasPrefix(toks[1], "_")
}

func (s *Service) onEntry(e jetstream.KeyValueEntry) {
	key := e.Key()
	if !isTriggerKey(key) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.remove(key)
		return
	}
	var t Trigger
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		s.log.Error("unreadable trigger", "key", key, "err", err)
		return
	}
	s.apply(key, &t, string(e.Value()))
}

// apply (re)starts the worker of trigger t when its definition changed.
func (s *Service) apply(key string, t *Trigger, spec string) {
	for {
		s.mu.Lock()
		if !s.started {
			s.mu.Unlock()
			return
		}
		r, ok := s.running[key]
		if ok && r.spec == spec {
			s.mu.Unlock()
			return
		}
		if ok {
			delete(s.running, key)
			s.mu.Unlock()
			r.cancel()
			<-r.done
			continue // look again: another apply may have run meanwhile
		}
		if t.Kind == KindHTTP {
			s.routes[key] = t
			s.rebuildRoutes()
		} else if _, had := s.routes[key]; had {
			delete(s.routes, key)
			s.rebuildRoutes()
		}
		ctx, cancel := context.WithCancel(s.ctx)
		r = &runner{spec: spec, cancel: cancel, done: make(chan struct{})}
		s.running[key] = r
		s.mu.Unlock()
		go func() {
			defer close(r.done)
			s.run(ctx, t)
		}()
		return
	}
}

func (s *Service) remove(key string) {
	s.mu.Lock()
	r, ok := s.running[key]
	delete(s.running, key)
	if _, had := s.routes[key]; had {
		delete(s.routes, key)
		s.rebuildRoutes()
	}
	s.mu.Unlock()
	if ok {
		r.cancel()
		<-r.done
	}
}

// run is one trigger's worker on this node.
func (s *Service) run(ctx context.Context, t *Trigger) {
	switch t.Kind {
	case KindSchedule:
		s.runSchedule(ctx, t)
	case KindTopic:
		s.runFanout(ctx, t, s.topicEnvelope(t))
	case KindKV:
		s.runFanout(ctx, t, changeEnvelope(t, KindKV, t.KV.Prefix, "", t.KV.Events))
	case KindObjects:
		o := t.Objects
		s.runFanout(ctx, t, changeEnvelope(t, KindObjects, o.Prefix, o.Suffix, o.Events))
	case KindQueue:
		s.runQueue(ctx, t)
	case KindMQTT:
		s.runMQTT(ctx, t)
	case KindHTTP:
		<-ctx.Done() // served by the route table
	}
}

func target(t *Trigger) invoke.Target {
	return invoke.Target{Tenant: t.Tenant, Function: t.Function}
}

// consumerName is the durable consumer of a trigger.
func consumerName(t *Trigger) string {
	return "trig_" + t.Tenant + "_" + t.Function + "_" + t.Name
}

// --- store ---

func (s *Service) getJSON(ctx context.Context, key string, v any) (bool, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, apierr.New(apierr.Unavailable, "reading %s: %v", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return false, fmt.Errorf("triggers: %s: %w", key, err)
	}
	return true, nil
}

func (s *Service) listJSON(ctx context.Context, prefix string, each func(key string, data []byte)) error {
	lister, err := s.kv.ListKeysFiltered(ctx, prefix)
	if err != nil {
		return apierr.New(apierr.Unavailable, "listing %s: %v", prefix, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		each(k, e.Value())
	}
	return nil
}

// Put validates and stores a trigger (created reports whether it is new).
// Errors are *apierr.Error saying what to fix; nothing is stored on error.
func (s *Service) Put(ctx context.Context, t *Trigger) (created bool, err error) {
	if err := s.Open(ctx); err != nil {
		return false, err
	}
	if err := t.normalize(); err != nil {
		return false, apierr.New(apierr.InvalidConfig, "%v", err)
	}
	if _, err := s.cfg.Invoker.Resolve(target(t)); err != nil {
		return false, err
	}
	switch t.Kind {
	case KindTopic:
		if ok, err := s.getJSON(ctx, topicKey(t.Tenant, t.Topic.Topic), &Topic{}); err != nil || !ok {
			return false, errOr(err, apierr.New(apierr.NotFound, "topic %q is not declared; create it first with PUT /api/v1/topics/%s (nimbus topic create %s)", t.Topic.Topic, t.Topic.Topic, t.Topic.Topic))
		}
	case KindQueue:
		if ok, err := s.getJSON(ctx, queueKey(t.Tenant, t.Queue.Queue), &Queue{}); err != nil || !ok {
			return false, errOr(err, apierr.New(apierr.NotFound, "queue %q is not declared; create it first with PUT /api/v1/queues/%s (nimbus queue create %s)", t.Queue.Queue, t.Queue.Queue, t.Queue.Queue))
		}
		other, err := s.queueConsumer(ctx, t.Tenant, t.Queue.Queue)
		if err != nil {
			return false, err
		}
		if other != "" && other != t.key() {
			return false, apierr.New(apierr.Conflict, "queue %q is already consumed by trigger %s; a queue has one consumer", t.Queue.Queue, other)
		}
	case KindHTTP:
		if err := s.checkRouteConflict(t); err != nil {
			return false, err
		}
	}
	var old Trigger
	exists, err := s.getJSON(ctx, t.key(), &old)
	if err != nil {
		return false, err
	}
	now := time.Now().UTC()
	t.Created, t.Updated = now, now
	if exists {
		t.Created = old.Created
		if t.Kind != old.Kind {
			s.deleteConsumers(ctx, &old)
		}
	}
	if _, err := s.ensureConsumer(ctx, t); err != nil {
		return false, apierr.New(apierr.Unavailable, "creating the consumer of trigger %s: %v", t.Name, err)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return false, err
	}
	if _, err := s.kv.Put(ctx, t.key(), data); err != nil {
		return false, apierr.New(apierr.Unavailable, "storing trigger %s: %v", t.Name, err)
	}
	// Serve it on this node at once (routes, schedules); other nodes follow
	// through their watch.
	s.apply(t.key(), t, string(data))
	return !exists, nil
}

func errOr(err error, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// Get returns one trigger.
func (s *Service) Get(ctx context.Context, tenant, fn, name string) (*Trigger, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	var t Trigger
	ok, err := s.getJSON(ctx, tenant+"."+fn+"."+name, &t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierr.New(apierr.NotFound, "function %q has no trigger %q", fn, name)
	}
	return &t, nil
}

// List returns the triggers of a function ("" for every function of tenant).
func (s *Service) List(ctx context.Context, tenant, fn string) ([]*Trigger, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	prefix := tenant + ".*.*"
	if fn != "" {
		prefix = tenant + "." + fn + ".*"
	}
	out := []*Trigger{}
	err := s.listJSON(ctx, prefix, func(key string, data []byte) {
		if !isTriggerKey(key) {
			return
		}
		var t Trigger
		if json.Unmarshal(data, &t) == nil {
			out = append(out, &t)
		}
	})
	return out, err
}

// Delete removes a trigger and its durable consumers.
func (s *Service) Delete(ctx context.Context, tenant, fn, name string) error {
	t, err := s.Get(ctx, tenant, fn, name)
	if err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, t.key()); err != nil {
		return apierr.New(apierr.Unavailable, "deleting trigger %s: %v", name, err)
	}
	_ = s.kv.Delete(ctx, s.tickKey(t))
	s.remove(t.key())
	s.deleteConsumers(ctx, t)
	return nil
}

func (s *Service) deleteConsumers(ctx context.Context, t *Trigger) {
	var stream, name string
	switch t.Kind {
	case KindTopic:
		stream, name = bus.StreamEvents, consumerName(t)
	case KindKV, KindObjects:
		stream, name = bus.StreamChanges, consumerName(t)
	case KindQueue:
		stream, name = bus.StreamQueues, queueConsumerName(t.Tenant, t.Queue.Queue)
	default:
		return
	}
	if err := s.cfg.Bus.JS.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("deleting a trigger's consumer", "trigger", t.key(), "err", err)
	}
}

// queueConsumer returns the key of the trigger consuming a queue, or "".
func (s *Service) queueConsumer(ctx context.Context, tenant, queue string) (string, error) {
	ts, err := s.List(ctx, tenant, "")
	if err != nil {
		return "", err
	}
	for _, t := range ts {
		if t.Kind == KindQueue && t.Queue.Queue == queue {
			return t.key(), nil
		}
	}
	return "", nil
}
