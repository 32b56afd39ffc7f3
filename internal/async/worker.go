package async

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// worker runs the queued invocations of one function on this node.
type worker struct {
	s            *Service
	tenant, fn   string
	limit        int
	sem          chan struct{}
	runCtx       context.Context // cancelled when the stop deadline passes
	cancelRun    context.CancelFunc
	stopFetch    chan struct{}
	fetchDone    chan struct{}
	inflight     sync.WaitGroup
	stopOnce     sync.Once
	mu           sync.Mutex
	it           jetstream.MessagesContext
	consumerName string
}

func newWorker(s *Service, tenant, fn string) *worker {
	limit := s.cfg.DefaultConcurrency
	if v, err := s.cfg.Invoker.Resolve(Target{Tenant: tenant, Function: fn}); err == nil {
		limit = concurrencyOf(v, s.cfg.DefaultConcurrency)
	}
	return &worker{
		s: s, tenant: tenant, fn: fn, limit: limit,
		sem:          make(chan struct{}, limit),
		stopFetch:    make(chan struct{}),
		fetchDone:    make(chan struct{}),
		consumerName: "async_" + tenant + "_" + fn,
	}
}

// concurrencyOf is the per-node async concurrency of v: scale.max ×
// concurrency when scale.max is set, else def.
func concurrencyOf(v *registry.Version, def int) int {
	if v.Config.Scale.Max <= 0 {
		return def
	}
	n := v.Config.Scale.Max * invoke.ScaleConfig(v).Concurrency
	return max(1, min(n, MaxConcurrency))
}

func (w *worker) start(parent context.Context) {
	w.runCtx, w.cancelRun = context.WithCancel(parent)
	go w.fetchLoop()
}

// stop stops fetching, waits for running invocations until ctx ends, then
// cancels them and waits for them to return.
func (w *worker) stop(ctx context.Context) {
	w.stopOnce.Do(func() { close(w.stopFetch) })
	w.mu.Lock()
	if w.it != nil {
		w.it.Stop()
	}
	w.mu.Unlock()
	<-w.fetchDone
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		w.cancelRun()
		<-done
	}
	w.cancelRun()
}

func (w *worker) stopping() bool {
	select {
	case <-w.stopFetch:
		return true
	default:
		return false
	}
}

func (w *worker) consumer(ctx context.Context) (jetstream.Consumer, error) {
	return w.s.js.CreateOrUpdateConsumer(ctx, bus.StreamAsync, jetstream.ConsumerConfig{
		Durable:       w.consumerName,
		Description:   "async invocations of " + w.tenant + "/" + w.fn,
		FilterSubject: bus.Subject(bus.SubjectAsync, w.tenant, w.fn),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.s.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10_000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
}

func (w *worker) fetchLoop() {
	defer close(w.fetchDone)
	log := w.s.log.With("tenant", w.tenant, "function", w.fn)
	wait := 100 * time.Millisecond
	for !w.stopping() {
		ctx, cancel := context.WithTimeout(w.runCtx, 10*time.Second)
		cons, err := w.consumer(ctx)
		cancel()
		if err == nil {
			var it jetstream.MessagesContext
			it, err = cons.Messages(jetstream.PullMaxMessages(w.limit))
			if err == nil {
				w.mu.Lock()
				w.it = it
				w.mu.Unlock()
				if w.stopping() {
					it.Stop()
				}
				err = w.drain(it)
				it.Stop()
				wait = 100 * time.Millisecond
			}
		}
		if w.stopping() {
			return
		}
		log.Warn("async worker restarting", "err", err)
		select {
		case <-w.stopFetch:
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// drain takes messages from it until it stops or fails.
func (w *worker) drain(it jetstream.MessagesContext) error {
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		if !w.acquire(msg) {
			_ = msg.Nak()
			return nil
		}
		w.inflight.Add(1)
		go func() {
			defer func() { <-w.sem; w.inflight.Done() }()
			w.s.handle(w.runCtx, msg)
		}()
	}
}

// acquire waits for a free slot, telling JetStream the message is still
// being worked on meanwhile. It fails when the worker stops.
func (w *worker) acquire(msg jetstream.Msg) bool {
	select {
	case w.sem <- struct{}{}:
		return true
	default:
	}
	tk := time.NewTicker(w.s.cfg.AckWait / 3)
	defer tk.Stop()
	for {
		select {
		case w.sem <- struct{}{}:
			return true
		case <-w.stopFetch:
			return false
		case <-tk.C:
			_ = msg.InProgress()
		}
	}
}

// handle runs one delivery of an async invocation.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("async message without metadata", "err", err)
		_ = msg.Term()
		return
	}
	var j Job
	if err := json.Unmarshal(msg.Data(), &j); err != nil || j.ID == "" {
		// Not something Enqueue wrote: keep it in dead letters, never lose it.
		j = Job{ID: fmt.Sprintf("seq%d", md.Sequence.Stream), Body: msg.Data(), Enqueued: md.Timestamp}
		j.Tenant, j.Function = splitSubject(msg.Subject())
		s.deadLetter(ctx, msg, &j, int(md.NumDelivered), fmt.Sprintf("undecodable async message: %v", err), nil)
		return
	}
	attempt := int(md.NumDelivered)
	t := j.Target()
	v, rerr := s.cfg.Invoker.Resolve(t)
	if rerr != nil {
		s.finishFailed(ctx, msg, &j, nil, attempt, fmt.Sprintf("function could not be resolved: %v", rerr), 0, nil, time.Time{})
		return
	}
	pol := s.PolicyOf(v)
	if attempt > pol.Attempts {
		s.finishFailed(ctx, msg, &j, v, attempt-1, "attempts exhausted before a result was recorded", 0, nil, time.Time{})
		return
	}
	if age := time.Since(j.Enqueued); age > pol.MaxAge {
		s.finishFailed(ctx, msg, &j, v, attempt-1, fmt.Sprintf("event is %s old, beyond max_age %s: not run", age.Round(time.Second), pol.MaxAge), 0, nil, time.Time{})
		return
	}
	started := time.Now().UTC()
	_ = s.putStatus(ctx, &Status{
		ID: j.ID, Tenant: j.Tenant, Function: j.Function, Version: v.Number, Trigger: j.Trigger,
		State: StateRunning, Attempts: attempt, Enqueued: j.Enqueued, Started: &started, Node: s.cfg.Node,
	}, pol.ResultTTL, false)

	req := j.request(attempt)
	cw := &captureWriter{header: http.Header{}}
	stopBeat := s.heartbeat(msg)
	_, ierr := s.cfg.Invoker.Invoke(ctx, t, req, cw)
	stopBeat()
	finished := time.Now().UTC()
	if ctx.Err() != nil {
		// The node is stopping: give the event back, to be run again.
		_ = msg.Nak()
		return
	}
	status := cw.status
	if status == 0 && ierr == nil {
		status = http.StatusOK
	}
	body := newBody(cw.buf.Bytes(), cw.header.Get("Content-Type"), cw.truncated)
	if ierr == nil && status < 500 {
		if err := msg.DoubleAck(ctx); err != nil {
			s.log.Warn("acknowledging async invocation", "id", j.ID, "err", err)
		}
		st := &Status{
			ID: j.ID, Tenant: j.Tenant, Function: j.Function, Version: v.Number, Trigger: j.Trigger,
			State: StateSucceeded, Attempts: attempt, StatusCode: status, Result: body,
			Enqueued: j.Enqueued, Started: &started, Finished: &finished,
			DurationMS: float64(finished.Sub(started).Microseconds()) / 1000, Node: s.cfg.Node,
		}
		_ = s.putStatus(ctx, st, pol.ResultTTL, false)
		s.destinations(ctx, &j, v, st)
		return
	}
	errText := failureText(j.Function, ierr, status)
	if attempt < pol.Attempts {
		_ = msg.NakWithDelay(pol.Backoff(attempt))
		_ = s.putStatus(ctx, &Status{
			ID: j.ID, Tenant: j.Tenant, Function: j.Function, Version: v.Number, Trigger: j.Trigger,
			State: StateQueued, Attempts: attempt, Error: errText, StatusCode: status, Result: body,
			Enqueued: j.Enqueued, Started: &started, Finished: &finished, Node: s.cfg.Node,
		}, pol.ResultTTL, false)
		return
	}
	s.finishFailed(ctx, msg, &j, v, attempt, errText, status, body, started)
}

// finishFailed dead-letters the event, terminates it, records the failure and
// calls the on_failure destination.
func (s *Service) finishFailed(ctx context.Context, msg jetstream.Msg, j *Job, v *registry.Version, attempts int, errText string, status int, body *Body, started time.Time) {
	if !s.deadLetter(ctx, msg, j, attempts, errText, v) {
		return
	}
	finished := time.Now().UTC()
	st := &Status{
		ID: j.ID, Tenant: j.Tenant, Function: j.Function, Trigger: j.Trigger,
		State: StateFailed, Attempts: attempts, Error: errText, StatusCode: status, Result: body,
		Enqueued: j.Enqueued, Finished: &finished, DeadLetter: true, Node: s.cfg.Node,
	}
	if !started.IsZero() {
		st.Started = &started
	}
	ttl := DefaultResultTTL
	if v != nil {
		st.Version = v.Number
		ttl = s.PolicyOf(v).ResultTTL
	}
	_ = s.putStatus(ctx, st, ttl, false)
	s.destinations(ctx, j, v, st)
}

// deadLetter publishes j to the dead-letter stream and only then terminates
// msg. When the dead letter cannot be written the message is left to be
// redelivered, and false is returned.
func (s *Service) deadLetter(ctx context.Context, msg jetstream.Msg, j *Job, attempts int, errText string, v *registry.Version) bool {
	md, _ := msg.Metadata()
	var seq uint64
	if md != nil {
		seq = md.Sequence.Stream
	}
	dl := DeadLetter{ID: j.ID, Tenant: j.Tenant, Function: j.Function, Error: errText, Attempts: attempts, FailedAt: time.Now().UTC(), Job: *j}
	if err := s.PublishDeadLetter(ctx, dl, fmt.Sprintf("async.%s.%d", j.ID, seq)); err != nil {
		s.log.Error("writing a dead letter; the event stays queued", "id", j.ID, "function", j.Function, "err", err)
		_ = msg.NakWithDelay(s.cfg.BackoffBase)
		return false
	}
	if err := msg.Term(); err != nil {
		s.log.Warn("terminating a dead-lettered event", "id", j.ID, "err", err)
	}
	return true
}

// PublishDeadLetter writes dl to the dead-letter stream (de-duplicated by
// msgID within two minutes). Triggers use it for queue items.
func (s *Service) PublishDeadLetter(ctx context.Context, dl DeadLetter, msgID string) error {
	if s.js == nil {
		if err := s.Open(ctx); err != nil {
			return err
		}
	}
	data, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = s.js.Publish(ctx, bus.Subject(bus.SubjectDeadLetters, dl.Tenant, dl.Function), data, jetstream.WithMsgID(msgID))
	if err != nil {
		return fmt.Errorf("async: dead letter for %s/%s: %w", dl.Function, dl.ID, err)
	}
	return nil
}

// heartbeat tells JetStream every AckWait/3 that msg is still being worked on.
func (s *Service) heartbeat(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(s.cfg.AckWait / 3)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func failureText(fn string, err error, status int) string {
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return ae.Code.Name + ": " + ae.Message
		}
		return invoke.HTTPError(fn, err).Message
	}
	return "function answered with status " + strconv.Itoa(status)
}

func splitSubject(subj string) (tenant, fn string) {
	var toks [4]string
	n := 0
	start := 0
	for i := 0; i <= len(subj) && n < 4; i++ {
		if i == len(subj) || subj[i] == '.' {
			toks[n] = subj[start:i]
			n++
			start = i + 1
		}
	}
	return toks[2], toks[3]
}

// request builds the function's request for one attempt.
func (j *Job) request(attempt int) *runtime.Request {
	h := j.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("X-Nimbus-Invocation-Id", j.ID)
	h.Set("X-Nimbus-Trigger", j.Trigger)
	h.Set("X-Nimbus-Attempt", strconv.Itoa(attempt))
	req := &runtime.Request{
		InvocationID: j.ID, Method: j.Method, Path: j.Path, RawQuery: j.RawQuery,
		Header: h, Trigger: j.Trigger,
	}
	body := j.Body
	if j.Event != nil {
		ev := *j.Event
		ev.Attempt = attempt
		body, _ = json.Marshal(ev)
		req.Method, req.Path, req.RawQuery, req.Raw = http.MethodPost, "/", "", true
		h.Set("Content-Type", "application/json")
	}
	req.Body = bytes.NewReader(body)
	req.ContentLength = int64(len(body))
	return req
}

// captureWriter keeps a function's answer: status, headers and at most
// MaxResultBody bytes of body.
type captureWriter struct {
	header    http.Header
	status    int
	buf       bytes.Buffer
	truncated bool
}

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	room := MaxResultBody - c.buf.Len()
	if len(b) > room {
		c.buf.Write(b[:max(room, 0)])
		c.truncated = true
		return len(b), nil
	}
	return c.buf.Write(b)
}
