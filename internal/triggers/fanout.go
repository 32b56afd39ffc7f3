package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/async"
	"github.com/nimbusfn/nimbus/internal/bus"
)

// envelopeFunc turns a stream message into an event, or reports that the
// trigger's filters drop it.
type envelopeFunc func(msg jetstream.Msg) (async.Envelope, bool)

// consumerConfig is the durable consumer a trigger reads its events from,
// for the kinds that have one.
func (s *Service) consumerConfig(t *Trigger) (string, jetstream.ConsumerConfig, bool) {
	cfg := jetstream.ConsumerConfig{
		Durable: consumerName(t), Description: "trigger " + t.key(),
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: s.cfg.AckWait, MaxDeliver: -1, MaxAckPending: 1000,
	}
	switch t.Kind {
	case KindTopic:
		cfg.FilterSubject = bus.Subject(bus.SubjectEvents, t.Tenant, t.Topic.Topic)
		return bus.StreamEvents, cfg, true
	case KindKV:
		cfg.FilterSubject = bus.Subject(bus.SubjectChanges, t.Tenant, "kv", t.KV.Bucket)
		return bus.StreamChanges, cfg, true
	case KindObjects:
		cfg.FilterSubject = bus.Subject(bus.SubjectChanges, t.Tenant, "objects", t.Objects.Bucket)
		return bus.StreamChanges, cfg, true
	case KindQueue:
		cfg.Durable = queueConsumerName(t.Tenant, t.Queue.Queue)
		cfg.Description = "queue trigger " + t.key()
		cfg.FilterSubject = bus.Subject(bus.SubjectQueues, t.Tenant, t.Queue.Queue)
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		cfg.MaxAckPending = 10_000
		return bus.StreamQueues, cfg, true
	}
	return "", cfg, false
}

// ensureConsumer creates or updates t's durable consumer. Put calls it before
// storing the trigger, so every event published after the trigger was
// accepted is delivered.
func (s *Service) ensureConsumer(ctx context.Context, t *Trigger) (jetstream.Consumer, error) {
	stream, cfg, ok := s.consumerConfig(t)
	if !ok {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.cfg.Bus.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// runFanout runs t's durable consumer and queues one async invocation per
// matching message. A message is acknowledged only once its invocation is
// queued; the message id (trigger + stream sequence) makes redeliveries
// harmless.
func (s *Service) runFanout(ctx context.Context, t *Trigger, toEnvelope envelopeFunc) {
	log := s.log.With("trigger", t.key())
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		cons, err := s.ensureConsumer(ctx, t)
		if err == nil {
			err = s.consume(ctx, cons, t, toEnvelope)
			wait = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("trigger consumer restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (s *Service) consume(ctx context.Context, cons jetstream.Consumer, t *Trigger, toEnvelope envelopeFunc) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil {
				return nil
			}
			return err
		}
		ev, ok := toEnvelope(msg)
		if !ok {
			_ = msg.Ack()
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			_ = msg.Term()
			continue
		}
		msgID := "trig." + t.key() + "." + strconv.FormatUint(md.Sequence.Stream, 10)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = s.cfg.Async.EnqueueEvent(pctx, target(t), ev, async.Options{MsgID: msgID})
		cancel()
		if err != nil {
			var ae *apierr.Error
			if errors.As(err, &ae) && ae.Code.Status == 404 {
				// The function is gone; its trigger will be too.
				s.log.Warn("event for a function that does not exist dropped", "trigger", t.key(), "err", err)
				_ = msg.Ack()
				continue
			}
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

// topicEnvelope builds topic events, applying the trigger's filters.
func (s *Service) topicEnvelope(t *Trigger) envelopeFunc {
	sub := t.Topic
	return func(msg jetstream.Msg) (async.Envelope, bool) {
		ce := cloudEventFromNATS(msg.Headers(), msg.Data())
		if len(sub.Types) > 0 {
			ok := false
			for _, ty := range sub.Types {
				ok = ok || ty == ce.Type
			}
			if !ok {
				return async.Envelope{}, false
			}
		}
		if sub.Source != "" && sub.Source != ce.Source {
			return async.Envelope{}, false
		}
		if sub.SubjectPrefix != "" && !strings.HasPrefix(ce.Subject, sub.SubjectPrefix) {
			return async.Envelope{}, false
		}
		ev := ce.envelope()
		if ev.Time.IsZero() {
			if md, err := msg.Metadata(); err == nil {
				ev.Time = md.Timestamp.UTC()
			}
		}
		return ev, true
	}
}

// Change is a kv or object change event as published on nimbus.change.…
type Change struct {
	Kind     string    `json:"kind"` // kv.put, kv.deleted, object.created, object.deleted
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	Revision uint64    `json:"revision,omitempty"`
	Size     int64     `json:"size,omitempty"`
	ETag     string    `json:"etag,omitempty"`
	Time     time.Time `json:"time"`
}

func changeEnvelope(t *Trigger, kind, prefix, suffix string, events []string) envelopeFunc {
	return func(msg jetstream.Msg) (async.Envelope, bool) {
		var c Change
		if err := json.Unmarshal(msg.Data(), &c); err != nil {
			return async.Envelope{}, false
		}
		if !strings.HasPrefix(c.Key, prefix) || !strings.HasSuffix(c.Key, suffix) {
			return async.Envelope{}, false
		}
		if len(events) > 0 {
			ok := false
			for _, e := range events {
				ok = ok || e == c.Kind
			}
			if !ok {
				return async.Envelope{}, false
			}
		}
		ev := async.Envelope{Kind: kind, Time: c.Time, Source: kind + ":" + c.Bucket, Subject: c.Key, Type: c.Kind, Data: msg.Data()}
		if md, err := msg.Metadata(); err == nil {
			ev.ID = kind + "-" + c.Bucket + "-" + strconv.FormatUint(md.Sequence.Stream, 10)
			if ev.Time.IsZero() {
				ev.Time = md.Timestamp.UTC()
			}
		}
		return ev, true
	}
}
