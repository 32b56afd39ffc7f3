package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// DefaultRecordRetention is how long invocation records stay in their stream
// (the hourly rollups in BucketUsage are kept longer).
const DefaultRecordRetention = 35 * 24 * time.Hour

// Batching defaults of the Publisher (see PublisherConfig). Each batch
// message costs wake-ups of the publisher, JetStream and the meter: under
// load, 1,024 records or 100 ms per message cost 1-4% less throughput than
// 256 or 10 ms (docs/RATIONALE.md), for a crash losing up to 100 ms of
// records instead of 10.
const (
	DefaultBatchRecords  = 1024
	DefaultFlushInterval = 100 * time.Millisecond
	// maxBatchBytes keeps a batch message well under JetStream's 1 MB limit.
	maxBatchBytes = 256 << 10
	// maxInFlight is how many batch messages wait for their acknowledgement
	// at once; past it the publisher waits and new records queue in the buffer.
	maxInFlight = 8
)

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
	// BatchRecords is how many records one stream message carries at most
	// (default DefaultBatchRecords).
	BatchRecords int
	// FlushInterval is how long a record waits for others to share its
	// message (default DefaultFlushInterval). A crash loses at most the
	// records of the last FlushInterval that were not yet acknowledged.
	FlushInterval time.Duration
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
// returns; a background goroutine packs records into batch messages (see
// DecodeRecords), one per tenant and function, and publishes each batch when
// it holds BatchRecords records or its first record is FlushInterval old.
// Publishing is asynchronous with at most a few batches unacknowledged.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger
	js  jetstream.JetStream
	ch  chan Record
	// full wakes the publishing goroutine when the buffer holds a batch.
	full chan struct{}

	// batchID prefixes the message ids of this publisher's batches, which
	// makes a re-sent batch a duplicate the stream drops.
	batchID string
	seq     uint64 // owned by the run goroutine

	published, dropped, failed atomic.Uint64

	// free holds batch buffers whose messages the stream acknowledged, for
	// the next batches: a batch's buffer is otherwise grown anew each time.
	free chan []byte

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewPublisher builds a publisher; Start begins publishing.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 10000
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = DefaultBatchRecords
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultRecordRetention
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Publisher{cfg: cfg, log: lg.With("component", "metering"), ch: make(chan Record, cfg.Buffer), full: make(chan struct{}, 1), batchID: nuid.Next(),
		free: make(chan []byte, maxInFlight+1)}
}

// Start ensures the invocations stream and starts the publishing goroutine.
func (p *Publisher) Start(ctx context.Context) error {
	if p.cfg.Bus == nil {
		return errors.New("usage publisher: a bus is required")
	}
	if _, err := p.cfg.Bus.Stream(ctx, invocationsStream(p.cfg.MaxAge)); err != nil {
		return fmt.Errorf("usage publisher: %w", err)
	}
	js, err := jetstream.New(p.cfg.Bus.Conn, jetstream.WithPublishAsyncMaxPending(2*maxInFlight))
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

// Stop publishes every buffered record, waits for the acknowledgements and
// stops; it gives up when ctx ends.
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
		if len(p.ch) >= p.cfg.BatchRecords {
			select {
			case p.full <- struct{}{}:
			default:
			}
		}
	default:
		p.dropped.Add(1)
	}
}

// batch is the message being filled for one tenant's function.
type batch struct {
	subject string
	buf     []byte
	enc     recordEncoder
	n       int
}

// batchKey names a batch without making its subject per record.
type batchKey struct{ tenant, function string }

// inflight is a batch message waiting for its acknowledgement.
type inflight struct {
	f   jetstream.PubAckFuture
	msg *nats.Msg
	n   int
}

func (p *Publisher) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	acks := make(chan inflight, maxInFlight)
	acked := make(chan struct{})
	go func() { defer close(acked); p.waitAcks(acks) }()
	defer func() { close(acks); <-acked }()

	batches := map[batchKey]*batch{} // usually one or a few
	add := func(r *Record) {
		if r.Node == "" {
			r.Node = p.cfg.Node
		}
		key := batchKey{r.Tenant, r.Function}
		b := batches[key]
		if b == nil {
			// Names are checked once per batch: a batch exists only for valid ones.
			if !registry.ValidName(r.Tenant) || !registry.ValidName(r.Function) {
				p.failed.Add(1)
				return
			}
			b = &batch{subject: bus.Subject(bus.SubjectInvocations, r.Tenant, r.Function), buf: appendBatchHeader(p.buffer(), r.Tenant, r.Function)}
			batches[key] = b
		}
		b.buf = b.enc.append(b.buf, r)
		if b.n++; b.n >= p.cfg.BatchRecords || len(b.buf) >= maxBatchBytes {
			p.send(b, acks)
			delete(batches, key)
		}
	}
	// drain adds what the buffer holds (at most its size, so that a
	// recorder that keeps feeding cannot hold the publisher here) and
	// publishes every batch.
	drain := func() {
	loop:
		for range p.cfg.Buffer {
			select {
			case r := <-p.ch:
				add(&r)
			default:
				break loop
			}
		}
		for key, b := range batches {
			p.send(b, acks)
			delete(batches, key)
		}
	}
	// The goroutine wakes for the first record of a batch, then sleeps
	// until the batch is FlushInterval old or Record reports a full batch,
	// and takes the records from the buffer all at once: two wake-ups per
	// batch, not one per record.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			drain()
			return
		case r := <-p.ch:
			add(&r)
			timer.Reset(p.cfg.FlushInterval)
			select {
			case <-timer.C:
			case <-p.full:
				timer.Stop()
			case <-ctx.Done():
				timer.Stop()
			}
			drain()
		}
	}
}

// buffer returns an empty batch buffer, a used one when there is one.
func (p *Publisher) buffer() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return make([]byte, 0, 4096)
	}
}

// send publishes b asynchronously; waitAcks then counts it.
func (p *Publisher) send(b *batch, acks chan<- inflight) {
	if b.n == 0 {
		return
	}
	p.seq++
	msg := &nats.Msg{Subject: b.subject, Data: b.buf, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, p.batchID+"-"+strconv.FormatUint(p.seq, 10))
	f, err := p.js.PublishMsgAsync(msg)
	acks <- inflight{f: f, msg: msg, n: b.n}
	if err != nil {
		p.log.Debug("publishing invocation records failed; retrying", "error", err)
	}
}

// waitAcks counts each batch once the stream acknowledged it; a batch that
// failed is sent again (with the same message id, so the stream keeps one
// copy) a few times before its records are counted as failed.
func (p *Publisher) waitAcks(acks <-chan inflight) {
	for a := range acks {
		var err error
		if a.f == nil {
			err = errors.New("not sent")
		} else {
			select {
			case <-a.f.Ok():
				// Acknowledged: the client holds the message no more, so
				// its buffer can take the next batch.
				select {
				case p.free <- a.msg.Data:
				default:
				}
			case err = <-a.f.Err():
			case <-time.After(10 * time.Second):
				err = errors.New("no acknowledgement within 10s")
			}
		}
		for attempt := 0; err != nil && attempt < 3; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = p.js.PublishMsg(ctx, &nats.Msg{Subject: a.msg.Subject, Data: a.msg.Data, Header: a.msg.Header})
			cancel()
		}
		if err != nil {
			p.failed.Add(uint64(a.n))
			p.log.Warn("invocation records were not stored", "count", a.n, "error", err)
			continue
		}
		p.published.Add(uint64(a.n))
	}
}
