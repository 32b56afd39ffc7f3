package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ErrNotFound is returned for an unknown or expired invocation id.
var ErrNotFound = errors.New("async: no such invocation")

// putStatus stores st under its id for ttl, without waiting for the
// acknowledgement: writes from one connection to the bucket are applied in
// order. With create the write is refused when a status already exists, so a
// late "queued" never overwrites a worker's "running".
func (s *Service) putStatus(ctx context.Context, st *Status, ttl time.Duration, create bool) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if ttl < time.Second {
		ttl = time.Second
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(ttl)}
	if create {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
	}
	msg := &nats.Msg{Subject: "$KV." + bus.BucketAsyncResults + "." + st.ID, Data: data}
	if _, err := s.js.PublishMsgAsync(msg, opts...); err != nil {
		return fmt.Errorf("async: storing status of %s: %w", st.ID, err)
	}
	return nil
}

// Status returns the status of invocation id, or ErrNotFound.
func (s *Service) Status(ctx context.Context, id string) (*Status, error) {
	if !idRE.MatchString(id) {
		return nil, ErrNotFound
	}
	if s.res == nil {
		if err := s.Open(ctx); err != nil {
			return nil, err
		}
	}
	e, err := s.res.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("async: reading status of %s: %w", id, err)
	}
	var st Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("async: status of %s: %w", id, err)
	}
	return &st, nil
}
