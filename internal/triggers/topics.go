package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

func topicKey(tenant, name string) string { return tenant + "._topic." + name }
func queueKey(tenant, name string) string { return tenant + "._queue." + name }

// DeclareTopic creates a topic (idempotent).
func (s *Service) DeclareTopic(ctx context.Context, tenant, name string) (*Topic, error) {
	return declare(ctx, s, topicKey(tenant, name), "topic", name, func(now time.Time) *Topic { return &Topic{Name: name, Created: now} }, func() *Topic { return &Topic{} })
}

// DeclareQueue creates a queue (idempotent).
func (s *Service) DeclareQueue(ctx context.Context, tenant, name string) (*Queue, error) {
	return declare(ctx, s, queueKey(tenant, name), "queue", name, func(now time.Time) *Queue { return &Queue{Name: name, Created: now} }, func() *Queue { return &Queue{} })
}

func declare[T any](ctx context.Context, s *Service, key, kind, name string, fresh func(time.Time) T, empty func() T) (T, error) {
	var zero T
	if err := registry.CheckName(kind, name); err != nil {
		return zero, apierr.New(apierr.InvalidName, "%v", err)
	}
	if err := s.Open(ctx); err != nil {
		return zero, err
	}
	existing := empty()
	if ok, err := s.getJSON(ctx, key, existing); err != nil {
		return zero, err
	} else if ok {
		return existing, nil
	}
	v := fresh(time.Now().UTC())
	data, _ := json.Marshal(v)
	if _, err := s.kv.Create(ctx, key, data); err != nil && !errorsIsKeyExists(err) {
		return zero, apierr.New(apierr.Unavailable, "storing %s %s: %v", kind, name, err)
	}
	return v, nil
}

func errorsIsKeyExists(err error) bool { return errors.Is(err, jetstream.ErrKeyExists) }

// Topics lists a tenant's declared topics.
func (s *Service) Topics(ctx context.Context, tenant string) ([]Topic, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	out := []Topic{}
	err := s.listJSON(ctx, tenant+"._topic.*", func(_ string, data []byte) {
		var t Topic
		if json.Unmarshal(data, &t) == nil {
			out = append(out, t)
		}
	})
	return out, err
}

// Queues lists a tenant's declared queues.
func (s *Service) Queues(ctx context.Context, tenant string) ([]Queue, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	out := []Queue{}
	err := s.listJSON(ctx, tenant+"._queue.*", func(_ string, data []byte) {
		var q Queue
		if json.Unmarshal(data, &q) == nil {
			out = append(out, q)
		}
	})
	return out, err
}

// DeleteTopic removes a declared topic; refused while triggers subscribe to it.
func (s *Service) DeleteTopic(ctx context.Context, tenant, name string) error {
	return s.deleteResource(ctx, tenant, topicKey(tenant, name), "topic", name, func(t *Trigger) bool { return t.Kind == KindTopic && t.Topic.Topic == name })
}

// DeleteQueue removes a declared queue and its messages; refused while a trigger consumes it.
func (s *Service) DeleteQueue(ctx context.Context, tenant, name string) error {
	if err := s.deleteResource(ctx, tenant, queueKey(tenant, name), "queue", name, func(t *Trigger) bool { return t.Kind == KindQueue && t.Queue.Queue == name }); err != nil {
		return err
	}
	if st, err := s.cfg.Bus.JS.Stream(ctx, bus.StreamQueues); err == nil {
		_ = st.Purge(ctx, jetstream.WithPurgeSubject(bus.Subject(bus.SubjectQueues, tenant, name)))
	}
	return nil
}

func (s *Service) deleteResource(ctx context.Context, tenant, key, kind, name string, uses func(*Trigger) bool) error {
	if err := s.Open(ctx); err != nil {
		return err
	}
	var v json.RawMessage
	ok, err := s.getJSON(ctx, key, &v)
	if err != nil {
		return err
	}
	if !ok {
		return apierr.New(apierr.NotFound, "%s %q is not declared", kind, name)
	}
	ts, err := s.List(ctx, tenant, "")
	if err != nil {
		return err
	}
	for _, t := range ts {
		if uses(t) {
			return apierr.New(apierr.Conflict, "%s %q is used by trigger %s of function %s; delete the trigger first", kind, name, t.Name, t.Function)
		}
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return apierr.New(apierr.Unavailable, "deleting %s %s: %v", kind, name, err)
	}
	return nil
}

// Publish stores a CloudEvent on a declared topic; every subscribed function
// gets one async invocation. Errors are *apierr.Error (400, 404).
func (s *Service) Publish(ctx context.Context, tenant, topic string, ce *CloudEvent) error {
	if err := s.Open(ctx); err != nil {
		return err
	}
	if err := ce.Validate(); err != nil {
		return apierr.New(apierr.BadRequest, "%v", err)
	}
	if ok, err := s.getJSON(ctx, topicKey(tenant, topic), &Topic{}); err != nil || !ok {
		return errOr(err, apierr.New(apierr.NotFound, "topic %q is not declared; create it with PUT /api/v1/topics/%s (nimbus topic create %s)", topic, topic, topic))
	}
	if len(ce.Data) > 1<<20 {
		return apierr.New(apierr.PayloadTooLarge, "event data is larger than 1 MB")
	}
	msg := ce.natsMsg(bus.Subject(bus.SubjectEvents, tenant, topic))
	if _, err := s.cfg.Bus.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(ce.Source+" "+ce.ID)); err != nil {
		return apierr.New(apierr.Unavailable, "publishing to topic %s: %v", topic, err)
	}
	return nil
}

// PublishData publishes a JSON payload as a CloudEvent (async destinations).
func (s *Service) PublishData(ctx context.Context, tenant, topic, eventType, source, id string, data []byte) error {
	return s.Publish(ctx, tenant, topic, &CloudEvent{
		SpecVersion: "1.0", ID: id, Source: source, Type: eventType, Time: time.Now().UTC().Format(time.RFC3339Nano),
		DataContentType: "application/json", Data: data,
	})
}
