package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// LogLine is one stored line of function output.
type LogLine struct {
	Time         time.Time `json:"time"`
	Tenant       string    `json:"tenant"`
	Function     string    `json:"function"`
	Version      int       `json:"version"`
	InvocationID string    `json:"invocation_id,omitempty"`
	// Stream is "stdout", "stderr", or "nimbus" for notices Nimbus adds itself
	// (for example how many lines were dropped because the buffer was full).
	Stream string `json:"stream"`
	Line   string `json:"line"`
}

// StreamNimbus is the LogLine.Stream of notices written by Nimbus itself.
const StreamNimbus = "nimbus"

// LogsConfig configures the function log store. Zero values mean the defaults.
type LogsConfig struct {
	Bus *bus.Bus
	// Retention is how long lines are kept (the stream's MaxAge); default 7 days.
	Retention time.Duration
	// Buffer is how many lines wait for the publisher before new lines are
	// dropped (and counted); default 10000.
	Buffer int
	// MaxLineBytes cuts longer lines (the cut is marked with "…"); default 16 KiB.
	MaxLineBytes int
	Logger       *slog.Logger
}

// Default log settings.
const (
	DefaultLogRetention = 7 * 24 * time.Hour
	DefaultLogBuffer    = 10000
	DefaultMaxLineBytes = 16 << 10
	logBatch            = 256
	dropReportInterval  = time.Second
)

// LogStats counts what happened to captured lines since start.
type LogStats struct {
	Published uint64 `json:"published"`
	Dropped   uint64 `json:"dropped"` // buffer full
	Failed    uint64 `json:"failed"`  // the bus refused or did not acknowledge
}

// Logs captures function output through sinks, stores it on the bus stream
// bus.StreamLogs (subjects bus.SubjectLogs.{tenant}.{function}) and answers
// queries over it.
type Logs struct {
	cfg LogsConfig
	log *slog.Logger
	js  jetstream.JetStream // own context: its async-publish window is ours alone

	ch     chan logEntry
	redact atomic.Pointer[func(tenant string, line []byte) []byte]
	sinks  sync.Map // sinkKey → *logSink

	published, dropped, failed atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

type logEntry struct {
	sink   *logSink
	time   time.Time
	inv    string
	stream string
	line   []byte
	cut    bool
}

type sinkKey struct {
	tenant, function string
	version          int
}

// logSink is the runtime.LogSink of one function version.
type logSink struct {
	l                *Logs
	tenant, function string
	version          int
	subject          string
	valid            bool
	dropped          atomic.Uint64
	reported         uint64 // owned by the publisher goroutine
}

var _ runtime.LogSink = (*logSink)(nil)

// NewLogs builds the log store; Start creates its stream and publisher.
func NewLogs(cfg LogsConfig) *Logs {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultLogRetention
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultLogBuffer
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Logs{cfg: cfg, log: lg.With("component", "logs"), ch: make(chan logEntry, cfg.Buffer)}
}

// Start creates (or updates) the log stream and starts the publisher.
func (l *Logs) Start(ctx context.Context) error {
	if l.cfg.Bus == nil {
		return errors.New("logs: a bus is required")
	}
	_, err := l.cfg.Bus.Stream(ctx, jetstream.StreamConfig{
		Name:        bus.StreamLogs,
		Description: "Nimbus function log lines",
		Subjects:    []string{bus.SubjectLogs + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      l.cfg.Retention,
	})
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	js, err := jetstream.New(l.cfg.Bus.Conn, jetstream.WithPublishAsyncMaxPending(4*logBatch))
	if err != nil {
		return fmt.Errorf("logs: jetstream context: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		return errors.New("logs: already started")
	}
	l.js = js
	rctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go l.run(rctx, l.done)
	return nil
}

// Stop flushes the buffered lines and stops the publisher; it waits for it
// until ctx ends. Lines logged after Stop are kept in the buffer or dropped.
func (l *Logs) Stop(ctx context.Context) error {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("logs: stop: %w", ctx.Err())
	}
}

// Stats reports the publisher's counters.
func (l *Logs) Stats() LogStats {
	return LogStats{Published: l.published.Load(), Dropped: l.dropped.Load(), Failed: l.failed.Load()}
}

// SetRedactor installs f, which sees every line of tenant before it is stored
// and returns it with secret values masked. f runs on the publisher goroutine,
// never on the caller's. A nil f removes the redactor.
func (l *Logs) SetRedactor(f func(tenant string, line []byte) []byte) {
	if f == nil {
		l.redact.Store(nil)
		return
	}
	l.redact.Store(&f)
}

// Sink returns the LogSink for one function version. Its Log never blocks:
// when the buffer is full the line is dropped and counted, and a notice with
// the count is written to the function's log once there is room again.
func (l *Logs) Sink(tenant, function string, version int) runtime.LogSink {
	k := sinkKey{tenant, function, version}
	if s, ok := l.sinks.Load(k); ok {
		return s.(*logSink)
	}
	s := &logSink{
		l: l, tenant: tenant, function: function, version: version,
		subject: bus.Subject(bus.SubjectLogs, tenant, function),
		valid:   registry.ValidName(tenant) && registry.ValidName(function),
	}
	if !s.valid {
		l.log.Warn("log sink for an invalid tenant or function name drops every line", "tenant", tenant, "function", function)
	}
	got, _ := l.sinks.LoadOrStore(k, s)
	return got.(*logSink)
}

// Forget drops the cached sinks of a deleted function. Sinks still held keep
// working.
func (l *Logs) Forget(tenant, function string) {
	l.sinks.Range(func(k, _ any) bool {
		if sk := k.(sinkKey); sk.tenant == tenant && sk.function == function {
			l.sinks.Delete(k)
		}
		return true
	})
}

// Log implements runtime.LogSink. It copies line and never blocks.
func (s *logSink) Log(invocationID, stream string, line []byte) {
	if !s.valid {
		s.l.dropped.Add(1)
		return
	}
	cut := false
	if len(line) > s.l.cfg.MaxLineBytes {
		line, cut = line[:s.l.cfg.MaxLineBytes], true
	}
	e := logEntry{sink: s, time: time.Now(), inv: invocationID, stream: stream, line: bytes.Clone(line), cut: cut}
	select {
	case s.l.ch <- e:
	default:
		s.dropped.Add(1)
		s.l.dropped.Add(1)
	}
}

// run is the publisher: it drains the buffer in batches, publishes each batch
// asynchronously and waits for the acknowledgements before the next batch.
func (l *Logs) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	batch := make([]logEntry, 0, logBatch)
	tick := time.NewTicker(dropReportInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.flushAll()
			return
		case e := <-l.ch:
			batch = append(batch[:0], e)
			batch = l.fill(batch)
			l.publish(batch)
		case <-tick.C:
			l.reportDrops()
		}
	}
}

// fill adds buffered entries to batch without waiting.
func (l *Logs) fill(batch []logEntry) []logEntry {
	for len(batch) < cap(batch) {
		select {
		case e := <-l.ch:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// flushAll publishes what is buffered at stop, bounded so a stop cannot hang
// on a publisher that keeps being fed.
func (l *Logs) flushAll() {
	batch := make([]logEntry, 0, logBatch)
	for range (l.cfg.Buffer + logBatch - 1) / logBatch {
		batch = l.fill(batch[:0])
		if len(batch) == 0 {
			break
		}
		l.publish(batch)
	}
	l.reportDrops()
}

// reportDrops writes a notice into each function log that lost lines.
func (l *Logs) reportDrops() {
	var notices []logEntry
	l.sinks.Range(func(_, v any) bool {
		s := v.(*logSink)
		if d := s.dropped.Load(); s.valid && d > s.reported {
			msg := fmt.Sprintf("nimbus: %d log lines dropped: output came faster than the log store took it", d-s.reported)
			s.reported = d
			notices = append(notices, logEntry{sink: s, time: time.Now(), stream: StreamNimbus, line: []byte(msg)})
		}
		return true
	})
	if len(notices) > 0 {
		l.publish(notices)
	}
}

func (l *Logs) publish(batch []logEntry) {
	redact := l.redact.Load()
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	for i := range batch {
		e := &batch[i]
		line := e.line
		if redact != nil {
			line = (*redact)(e.sink.tenant, line)
		}
		text := string(line)
		if e.cut {
			text += "…"
		}
		data, err := json.Marshal(LogLine{
			Time: e.time, Tenant: e.sink.tenant, Function: e.sink.function, Version: e.sink.version,
			InvocationID: e.inv, Stream: e.stream, Line: text,
		})
		if err != nil {
			l.failed.Add(1)
			continue
		}
		f, err := l.js.PublishAsync(e.sink.subject, data)
		if err != nil {
			l.failed.Add(1)
			continue
		}
		futures = append(futures, f)
		*e = logEntry{} // release the line early
	}
	if len(futures) == 0 {
		return
	}
	select {
	case <-l.js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
	}
	var failed uint64
	var firstErr error
	for _, f := range futures {
		select {
		case <-f.Ok():
			l.published.Add(1)
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
		l.failed.Add(failed)
		l.log.Warn("function log lines were not stored", "count", failed, "error", firstErr)
	}
}

// LogQuery selects stored lines. Tenant is required; an empty Function means
// every function of the tenant.
type LogQuery struct {
	Tenant, Function string
	// Since and Until bound the lines' times; zero means unbounded.
	Since, Until time.Time
	// Grep keeps lines that contain it (case-sensitive substring).
	Grep string
	// InvocationID keeps the lines of one invocation.
	InvocationID string
	// Limit, when > 0, emits only the newest Limit matching stored lines (a
	// tail); with Follow, new lines are then emitted as they arrive.
	Limit int
	// Follow keeps emitting new lines until ctx ends (Query then returns nil).
	Follow bool
}

// untilSlack is how long after Until a line's storage time may lag its
// capture time (batching); past it a bounded query stops reading.
const untilSlack = 30 * time.Second

// Query emits the stored lines that match q, oldest first, through an ordered
// consumer that starts at q.Since. An error from emit stops the query and is
// returned.
func (l *Logs) Query(ctx context.Context, q LogQuery, emit func(LogLine) error) error {
	if err := registry.CheckName("tenant", q.Tenant); err != nil {
		return fmt.Errorf("logs query: %w", err)
	}
	fn := "*"
	if q.Function != "" {
		if err := registry.CheckName("function", q.Function); err != nil {
			return fmt.Errorf("logs query: %w", err)
		}
		fn = q.Function
	}
	js := l.js
	if js == nil {
		return errors.New("logs query: the log store is not started")
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{bus.Subject(bus.SubjectLogs, q.Tenant, fn)},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if !q.Since.IsZero() {
		since := q.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamLogs, cfg)
	if err != nil {
		return fmt.Errorf("logs query for %s/%s: %w", q.Tenant, q.Function, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("logs query for %s/%s: %w", q.Tenant, q.Function, err)
	}
	defer it.Stop()

	var tail *lineRing
	if q.Limit > 0 {
		tail = newLineRing(q.Limit)
	}
	caughtUp := false
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		caughtUp = true
	}
	// catchUp ends the stored part: the tail is emitted, a bounded query ends.
	catchUp := func() (bool, error) {
		caughtUp = true
		if tail != nil {
			if err := tail.each(emit); err != nil {
				return true, err
			}
			tail = nil
		}
		return !q.Follow, nil
	}
	if caughtUp {
		if stop, err := catchUp(); stop || err != nil {
			return err
		}
	}
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				if q.Follow {
					return nil
				}
				return fmt.Errorf("logs query for %s/%s: %w", q.Tenant, q.Function, ctx.Err())
			}
			return fmt.Errorf("logs query for %s/%s: %w", q.Tenant, q.Function, err)
		}
		meta, merr := msg.Metadata()
		var line LogLine
		if json.Unmarshal(msg.Data(), &line) == nil && line.Tenant == q.Tenant && q.match(&line) {
			if tail != nil && !caughtUp {
				tail.add(line)
			} else if err := emit(line); err != nil {
				return err
			}
		}
		if merr != nil {
			continue
		}
		if !q.Until.IsZero() && meta.Timestamp.After(q.Until.Add(untilSlack)) {
			if !caughtUp {
				_, err := catchUp()
				return err
			}
			return nil
		}
		if !caughtUp && meta.NumPending == 0 {
			if stop, err := catchUp(); stop || err != nil {
				return err
			}
		}
	}
}

func (q *LogQuery) match(line *LogLine) bool {
	if !q.Since.IsZero() && line.Time.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && line.Time.After(q.Until) {
		return false
	}
	if q.InvocationID != "" && line.InvocationID != q.InvocationID {
		return false
	}
	if q.Grep != "" && !strings.Contains(line.Line, q.Grep) {
		return false
	}
	return true
}

// lineRing keeps the newest max lines.
type lineRing struct {
	buf  []LogLine
	max  int
	next int // oldest entry once len(buf) == max
}

func newLineRing(n int) *lineRing { return &lineRing{buf: make([]LogLine, 0, min(n, 1024)), max: n} }

func (r *lineRing) add(l LogLine) {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, l)
		return
	}
	r.buf[r.next] = l
	r.next = (r.next + 1) % r.max
}

// each emits the kept lines, oldest first.
func (r *lineRing) each(emit func(LogLine) error) error {
	for i := range r.buf {
		if err := emit(r.buf[(r.next+i)%len(r.buf)]); err != nil {
			return err
		}
	}
	return nil
}
