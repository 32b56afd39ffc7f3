package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones on hosts without a zoneinfo database

	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	"github.com/nimbusfn/nimbus/internal/async"
)

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// aligned is an "@every d" schedule aligned on multiples of d, so that every
// node computes the same ticks whenever it started.
type aligned struct{ d time.Duration }

func (a aligned) Next(t time.Time) time.Time { return t.Truncate(a.d).Add(a.d) }

// parseSchedule parses a schedule's cron and time zone.
func parseSchedule(s *Schedule) (cron.Schedule, error) {
	spec := strings.TrimSpace(s.Cron)
	if spec == "" {
		return nil, bad("schedule.cron is required, e.g. \"*/5 * * * *\" or \"@every 30s\"")
	}
	if s.Timezone != "" {
		if strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
			return nil, bad("give the time zone either in schedule.timezone or as a CRON_TZ= prefix, not both")
		}
		if _, err := time.LoadLocation(s.Timezone); err != nil {
			return nil, bad("schedule.timezone %q is not a known IANA time zone (e.g. Europe/Paris): %v", s.Timezone, err)
		}
		spec = "CRON_TZ=" + s.Timezone + " " + spec
	}
	sched, err := cronParser.Parse(spec)
	if err != nil {
		return nil, bad("schedule.cron %q is invalid: %v (use 5 fields, 6 with seconds, a descriptor like @hourly, or @every 30s)", s.Cron, err)
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok {
		if every.Delay < time.Second {
			return nil, bad("schedule.cron %q: @every needs at least 1s", s.Cron)
		}
		return aligned{d: every.Delay}, nil
	}
	return sched, nil
}

func (s *Service) tickKey(t *Trigger) string {
	return t.Tenant + "._tick." + t.Function + "." + t.Name
}

// runSchedule fires t's ticks until ctx ends.
func (s *Service) runSchedule(ctx context.Context, t *Trigger) {
	sched, err := parseSchedule(t.Schedule)
	if err != nil {
		s.log.Error("schedule trigger no longer parses", "trigger", t.key(), "err", err)
		return
	}
	if t.Schedule.Missed == "once" {
		s.catchUp(ctx, t, sched)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		next := sched.Next(now)
		if next.IsZero() {
			return // a schedule that never fires again
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.fire(ctx, t, next)
	}
}

// catchUp fires the latest tick missed since the last recorded one.
func (s *Service) catchUp(ctx context.Context, t *Trigger, sched cron.Schedule) {
	e, err := s.kv.Get(ctx, s.tickKey(t))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("reading a schedule's last tick", "trigger", t.key(), "err", err)
		}
		return
	}
	sec, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return
	}
	last := time.Unix(sec, 0)
	now := time.Now()
	var missed time.Time
	for n, i := sched.Next(last), 0; !n.IsZero() && !n.After(now) && i < 1_000_000; n, i = sched.Next(n), i+1 {
		missed = n
	}
	if !missed.IsZero() {
		s.log.Info("firing a missed tick once", "trigger", t.key(), "tick", missed)
		s.fire(ctx, t, missed)
	}
}

// fire publishes one tick; every node publishes it with the same message id.
func (s *Service) fire(ctx context.Context, t *Trigger, tick time.Time) {
	unix := strconv.FormatInt(tick.Unix(), 10)
	data, _ := json.Marshal(map[string]any{"cron": t.Schedule.Cron, "timezone": t.Schedule.Timezone, "scheduled_time": tick.UTC()})
	ev := async.Envelope{
		Kind: KindSchedule, ID: t.Name + "-" + unix, Time: tick.UTC(), Source: "schedule:" + t.Name,
		Type: "nimbus.schedule.tick", Data: data,
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msgID := t.Tenant + "." + t.Function + "." + t.Name + "." + unix
	if _, err := s.cfg.Async.EnqueueEvent(pctx, target(t), ev, async.Options{MsgID: msgID}); err != nil {
		s.log.Warn("schedule tick not queued", "trigger", t.key(), "tick", tick, "err", err)
		return
	}
	if t.Schedule.Missed == "once" {
		if _, err := s.kv.Put(pctx, s.tickKey(t), []byte(unix)); err != nil {
			s.log.Warn("recording a schedule's last tick", "trigger", t.key(), "err", err)
		}
	}
}
