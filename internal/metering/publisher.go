package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// DefaultRecordRetention is how long invocation and usage records stay in
// their streams (the hourly rollups in BucketUsage are kept longer).
const DefaultRecordRetention = 35 * 24 * time.Hour

// invocationsStream is the stream configuration both the publisher and the
// meter ensure, so either may start first.
func invocationsStream(maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        bus.StreamInvocations,
		Description: "Nimbus invocation records",
		Subjects:    []string{bus.SubjectInvocations + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		Duplicates:  2 * time.Minute,
	}
}

// PublisherConfig configures a Publisher; zero values mean the defaults.
type PublisherConfig struct {
	Bus *bus.Bus
	// Node is written into records that do not name one.
	Node string
	// Buffer is how many records wait before new ones are dropped (default 10000).
	Buffer int
	// MaxAge of the invocations stream (default DefaultRecordRetention).
	MaxAge time.Duration
	Logger *slog.Logger
}

// PublisherStats counts records since start.
type PublisherStats struct {
	Published, Dropped, Failed uint64
}

// Publisher carries invocation records from the hot path to the stream
// bus.StreamInvocations: Record copies the record into a bounded buffer and
// returns; a background goroutine publishes batches asynchronously.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger
	js  jetstream.JetStream
	ch  chan Record

	published, dropped, failed atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

const publishBatch = 256

// NewPublisher builds a publisher; Start begins publishing.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 10000
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultRecordRetention
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Publisher{cfg: cfg, log: lg.With("component", "metering"), ch: make(chan Record, cfg.Buffer)}
}

// Start ensures the invocations stream and starts the publishing goroutine.
func (p *Publisher) Start(ctx context.Context) error {
	if p.cfg.Bus == nil {
		return errors.New("usage publisher: a bus is required")
	}
	if _, err := p.cfg.Bus.Stream(ctx, invocationsStream(p.cfg.MaxAge)); err != nil {
		return fmt.Errorf("usage publisher: %w", err)
	}
	js, err := jetstream.New(p.cfg.Bus.Conn, jetstream.WithPublishAsyncMaxPending(4*publishBatch))
	if err != nil {
		return fmt.Errorf("usage publisher: jetstream context: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		return errors.New("usage publisher: already started")
	}
	p.js = js
	rctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go p.run(rctx, p.done)
	return nil
}

// Stop publishes what is buffered and stops, waiting until ctx ends.
func (p *Publisher) Stop(ctx context.Context) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("usage publisher: stop: %w", ctx.Err())
	}
}

// Stats reports the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{Published: p.published.Load(), Dropped: p.dropped.Load(), Failed: p.failed.Load()}
}

// Record queues a copy of rec for publishing. It never blocks: when the
// buffer is full the record is dropped and counted.
func (p *Publisher) Record(rec *Record) {
	select {
	case p.ch <- *rec:
	default:
		p.dropped.Add(1)
	}
}

func (p *Publisher) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	batch := make([]Record, 0, publishBatch)
	for {
		select {
		case <-ctx.Done():
			for range (p.cfg.Buffer + publishBatch - 1) / publishBatch {
				batch = p.fill(batch[:0])
				if len(batch) == 0 {
					return
				}
				p.publish(batch)
			}
			return
		case r := <-p.ch:
			batch = p.fill(append(batch[:0], r))
			p.publish(batch)
		}
	}
}

func (p *Publisher) fill(batch []Record) []Record {
	for len(batch) < cap(batch) {
		select {
		case r := <-p.ch:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func (p *Publisher) publish(batch []Record) {
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	for i := range batch {
		r := &batch[i]
		if r.Node == "" {
			r.Node = p.cfg.Node
		}
		if !registry.ValidName(r.Tenant) || !registry.ValidName(r.Function) {
			p.failed.Add(1)
			continue
		}
		data, err := json.Marshal(r)
		if err != nil {
			p.failed.Add(1)
			continue
		}
		msg := &nats.Msg{Subject: bus.Subject(bus.SubjectInvocations, r.Tenant, r.Function), Data: data, Header: nats.Header{}}
		if r.ID != "" {
			msg.Header.Set(jetstream.MsgIDHeader, r.ID)
		}
		f, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			p.failed.Add(1)
			continue
		}
		futures = append(futures, f)
	}
	if len(futures) == 0 {
		return
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
	}
	var failed uint64
	var firstErr error
	for _, f := range futures {
		select {
		case <-f.Ok():
			p.published.Add(1)
		case err := <-f.Err():
			failed++
			if firstErr == nil {
				firstErr = err
			}
		default:
			failed++
		}
	}
	if failed > 0 {
		p.failed.Add(failed)
		p.log.Warn("invocation records were not stored", "count", failed, "error", firstErr)
	}
}
