package triggers

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/async"
)

// runMQTT subscribes to the NATS subject of t's MQTT filter (one queue group
// per trigger across nodes) and queues an invocation per message.
func (s *Service) runMQTT(ctx context.Context, t *Trigger) {
	subj, err := mqttSubject(t.MQTT.Filter)
	if err != nil {
		s.log.Error("mqtt trigger no longer valid", "trigger", t.key(), "err", err)
		return
	}
	sub, err := s.cfg.Bus.Conn.QueueSubscribe(subj, "mqtt_"+strings.ReplaceAll(t.key(), ".", "_"), func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "$") || strings.HasPrefix(m.Subject, "nimbus.") {
			return
		}
		ev := async.Envelope{
			Kind: KindMQTT, ID: nuid.Next(), Time: time.Now().UTC(), Source: "mqtt",
			Subject: strings.ReplaceAll(m.Subject, ".", "/"), Type: "nimbus.mqtt.message",
		}
		ev.SetData(m.Data, "")
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := s.cfg.Async.EnqueueEvent(pctx, target(t), ev, async.Options{}); err != nil {
			s.log.Warn("mqtt message not queued", "trigger", t.key(), "topic", ev.Subject, "err", err)
		}
	})
	if err != nil {
		s.log.Error("mqtt trigger could not subscribe", "trigger", t.key(), "subject", subj, "err", err)
		return
	}
	_ = sub.SetPendingLimits(65536, 64<<20)
	<-ctx.Done()
	_ = sub.Unsubscribe()
}
