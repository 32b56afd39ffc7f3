package triggers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// headerMsgID carries a queue message's id.
const headerMsgID = "Nimbus-Msg-Id"

// Send appends messages (each a JSON value) to a declared queue and returns
// their ids. Errors are *apierr.Error (400, 404, 429).
func (s *Service) Send(ctx context.Context, tenant, queue string, items []json.RawMessage) ([]string, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	if ok, err := s.getJSON(ctx, queueKey(tenant, queue), &Queue{}); err != nil || !ok {
		return nil, errOr(err, apierr.New(apierr.NotFound, "queue %q is not declared; create it with PUT /api/v1/queues/%s (nimbus queue create %s)", queue, queue, queue))
	}
	ids := make([]string, 0, len(items))
	subj := bus.Subject(bus.SubjectQueues, tenant, queue)
	for _, it := range items {
		if !json.Valid(it) {
			return ids, apierr.New(apierr.BadRequest, "queue message %d is not valid JSON", len(ids)+1)
		}
		id := nuid.Next()
		m := nats.NewMsg(subj)
		m.Header.Set(headerMsgID, id)
		m.Data = it
		if _, err := s.cfg.Bus.JS.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
			var ae *jetstream.APIError
			if errors.As(err, &ae) && strings.Contains(ae.Description, "maximum") {
				e := apierr.New(apierr.TooManyRequests, "queue %s is full; retry later", queue)
				e.Header = http.Header{"Retry-After": []string{"5"}}
				return ids, e
			}
			return ids, apierr.New(apierr.Unavailable, "sending to queue %s: %v", queue, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func queueConsumerName(tenant, queue string) string { return "queue_" + tenant + "_" + queue }

// QueueItem is one message of a queue batch, as the function sees it.
type QueueItem struct {
	ID      string          `json:"id"`
	Attempt int             `json:"attempt"`
	Data    json.RawMessage `json:"data"`
}

// BatchResponse is what a function may answer to report per-item failures.
type BatchResponse struct {
	BatchItemFailures []struct {
		ItemIdentifier string `json:"itemIdentifier"`
	} `json:"batchItemFailures"`
}

// runQueue consumes t's queue in batches until ctx ends.
func (s *Service) runQueue(ctx context.Context, t *Trigger) {
	q := t.Queue
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		cons, err := s.ensureConsumer(ctx, t)
		for err == nil && ctx.Err() == nil {
			var batch jetstream.MessageBatch
			fctx, fcancel := context.WithTimeout(ctx, q.Window.D())
			batch, err = cons.Fetch(q.Batch, jetstream.FetchContext(fctx))
			if err != nil {
				fcancel()
				break
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			fcancel()
			if len(msgs) > 0 {
				s.runBatch(ctx, t, msgs)
			}
			if be := batch.Error(); be != nil && !errors.Is(be, nats.ErrTimeout) && !errors.Is(be, context.DeadlineExceeded) {
				err = be
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("queue trigger restarting", "trigger", t.key(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

type queued struct {
	msg  jetstream.Msg
	item QueueItem
	md   *jetstream.MsgMetadata
}

// runBatch invokes the function once for msgs and settles each message.
func (s *Service) runBatch(ctx context.Context, t *Trigger, msgs []jetstream.Msg) {
	tgt := target(t)
	v, err := s.cfg.Invoker.Resolve(tgt)
	if err != nil {
		for _, m := range msgs {
			_ = m.NakWithDelay(5 * time.Second)
		}
		s.log.Warn("queue trigger for a function that cannot be resolved", "trigger", t.key(), "err", err)
		return
	}
	pol := s.cfg.Async.PolicyOf(v)
	var run []queued
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			_ = m.Term()
			continue
		}
		id := m.Headers().Get(headerMsgID)
		if id == "" {
			id = "seq" + strconv.FormatUint(md.Sequence.Stream, 10)
		}
		q := queued{msg: m, md: md, item: QueueItem{ID: id, Attempt: int(md.NumDelivered), Data: json.RawMessage(m.Data())}}
		switch {
		case q.item.Attempt > pol.Attempts:
			s.deadLetterItem(ctx, t, q, "attempts exhausted before a result was recorded", q.item.Attempt-1)
		case time.Since(md.Timestamp) > pol.MaxAge:
			s.deadLetterItem(ctx, t, q, fmt.Sprintf("message is older than max_age %s: not run", pol.MaxAge), q.item.Attempt-1)
		default:
			run = append(run, q)
		}
	}
	if len(run) == 0 {
		return
	}
	items := make([]QueueItem, len(run))
	attempt := 0
	for i, q := range run {
		items[i] = q.item
		attempt = max(attempt, q.item.Attempt)
	}
	data, _ := json.Marshal(items)
	ev := async.Envelope{Kind: KindQueue, ID: nuid.Next(), Time: time.Now().UTC(), Attempt: attempt, Source: "queue:" + t.Queue.Queue, Type: "nimbus.queue.batch", Data: data}
	body, _ := json.Marshal(ev)
	req := &runtime.Request{
		InvocationID: ev.ID, Method: http.MethodPost, Path: "/", Raw: true, Trigger: KindQueue,
		Header: http.Header{
			"Content-Type": {"application/json"}, "X-Nimbus-Invocation-Id": {ev.ID},
			"X-Nimbus-Trigger": {KindQueue}, "X-Nimbus-Attempt": {strconv.Itoa(attempt)},
		},
		Body: bytes.NewReader(body), ContentLength: int64(len(body)),
	}
	rw := &bufferWriter{header: http.Header{}}
	stop := s.heartbeat(run)
	_, ierr := s.cfg.Invoker.Invoke(ctx, tgt, req, rw)
	stop()
	if ctx.Err() != nil {
		for _, q := range run {
			_ = q.msg.Nak()
		}
		return
	}
	failed := map[string]bool{}
	var errText string
	switch {
	case ierr != nil:
		errText = invoke.HTTPError(t.Function, ierr).Message
	case rw.status >= 500:
		errText = "function answered with status " + strconv.Itoa(rw.status)
	default:
		var br BatchResponse
		if json.Unmarshal(rw.buf.Bytes(), &br) == nil {
			for _, f := range br.BatchItemFailures {
				failed[f.ItemIdentifier] = true
			}
		}
	}
	for _, q := range run {
		if errText == "" && !failed[q.item.ID] {
			_ = q.msg.Ack()
			continue
		}
		msg := errText
		if msg == "" {
			msg = "the function reported this item as failed (batchItemFailures)"
		}
		if q.item.Attempt < pol.Attempts {
			_ = q.msg.NakWithDelay(pol.Backoff(q.item.Attempt))
			continue
		}
		s.deadLetterItem(ctx, t, q, msg, q.item.Attempt)
	}
}

// deadLetterItem writes one queue item to the dead letters, then terminates it.
func (s *Service) deadLetterItem(ctx context.Context, t *Trigger, q queued, errText string, attempts int) {
	data, _ := json.Marshal([]QueueItem{q.item})
	ev := async.Envelope{Kind: KindQueue, ID: q.item.ID, Time: q.md.Timestamp.UTC(), Source: "queue:" + t.Queue.Queue, Type: "nimbus.queue.batch", Data: data}
	dl := async.DeadLetter{
		ID: q.item.ID, Tenant: t.Tenant, Function: t.Function, Error: errText, Attempts: attempts, FailedAt: time.Now().UTC(),
		Job: async.Job{ID: q.item.ID, Tenant: t.Tenant, Function: t.Function, Trigger: KindQueue, Event: &ev, Enqueued: q.md.Timestamp.UTC()},
	}
	if err := s.cfg.Async.PublishDeadLetter(ctx, dl, "queue."+q.item.ID+"."+strconv.FormatUint(q.md.Sequence.Stream, 10)); err != nil {
		s.log.Error("writing a queue item's dead letter; the item stays queued", "trigger", t.key(), "item", q.item.ID, "err", err)
		_ = q.msg.NakWithDelay(time.Second)
		return
	}
	_ = q.msg.Term()
}

// heartbeat keeps a batch's messages from being redelivered while it runs.
func (s *Service) heartbeat(run []queued) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tk := time.NewTicker(s.cfg.AckWait / 3)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				for _, q := range run {
					_ = q.msg.InProgress()
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// bufferWriter keeps a function's answer (at most 1 MB of body).
type bufferWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }

func (b *bufferWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if room := 1<<20 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
