package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// MaxDeadLetterList is the most dead letters List returns.
const MaxDeadLetterList = 1000

// List returns the dead letters of a function, oldest first (at most
// MaxDeadLetterList).
func (s *Service) List(ctx context.Context, tenant, fn string) ([]DeadLetter, error) {
	if err := s.Open(ctx); err != nil {
		return nil, err
	}
	subj := bus.Subject(bus.SubjectDeadLetters, tenant, fn)
	info, err := s.dlq.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("async: dead letters of %s: %w", fn, err)
	}
	total := info.State.Subjects[subj]
	out := []DeadLetter{}
	if total == 0 {
		return out, nil
	}
	cons, err := s.js.OrderedConsumer(ctx, bus.StreamDeadLetters, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("async: reading dead letters of %s: %w", fn, err)
	}
	want := min(int(total), MaxDeadLetterList)
	for len(out) < want {
		batch, err := cons.Fetch(min(256, want-len(out)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("async: reading dead letters of %s: %w", fn, err)
		}
		n := 0
		var pending uint64 = 1
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			var dl DeadLetter
			if json.Unmarshal(m.Data(), &dl) != nil {
				dl = DeadLetter{ID: "seq" + strconv.FormatUint(md.Sequence.Stream, 10), Tenant: tenant, Function: fn, Error: "undecodable dead letter"}
			}
			dl.Seq = md.Sequence.Stream
			out = append(out, dl)
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return nil, fmt.Errorf("async: reading dead letters of %s: %w", fn, batch.Error())
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	return out, nil
}

// Replay queues the dead letters with the given invocation ids again (all of
// them when ids is empty) as fresh invocations with a fresh attempt count,
// and removes them from the dead letters. It returns how many were replayed.
func (s *Service) Replay(ctx context.Context, tenant, fn string, ids []string) (int, error) {
	dls, err := s.List(ctx, tenant, fn)
	if err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	for _, dl := range dls {
		if len(want) > 0 && !want[dl.ID] {
			continue
		}
		j := dl.Job
		j.Tenant, j.Function = tenant, fn
		if j.ID == "" {
			j.ID = dl.ID
		}
		if _, err := s.enqueue(ctx, &j, Options{MsgID: "replay." + j.ID + "." + strconv.FormatUint(dl.Seq, 10), replay: true}); err != nil {
			return n, err
		}
		if err := s.dlq.DeleteMsg(ctx, dl.Seq); err != nil {
			return n, fmt.Errorf("async: removing replayed dead letter %s: %w", dl.ID, err)
		}
		n++
	}
	return n, nil
}

// Purge deletes every dead letter of a function and returns how many there were.
func (s *Service) Purge(ctx context.Context, tenant, fn string) (int, error) {
	if err := s.Open(ctx); err != nil {
		return 0, err
	}
	subj := bus.Subject(bus.SubjectDeadLetters, tenant, fn)
	info, err := s.dlq.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("async: dead letters of %s: %w", fn, err)
	}
	if err := s.dlq.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return 0, fmt.Errorf("async: purging dead letters of %s: %w", fn, err)
	}
	return int(info.State.Subjects[subj]), nil
}
