package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

// BucketUsage is the KV bucket of hourly rollups, keyed
// "{tenant}.{function}.{YYYYMMDDHH}" (UTC), plus the meter's checkpoint.
const BucketUsage = "nimbus_usage"

const (
	checkpointKey = "_meter.checkpoint"
	hourLayout    = "2006010215"
)

// Usage is the usage of one invocation. It is derived from the invocation's
// Record (see Prices.Usage), which is what the invocations stream stores:
// one durable copy, not a second stream of usage records.
type Usage struct {
	Record
	BilledMS  int64   `json:"billed_ms"`
	GBSeconds float64 `json:"gb_seconds"`
	Cost      float64 `json:"cost"`
}

// Usage is rec's billed milliseconds, GB-seconds and cost at p.
func (p Prices) Usage(rec *Record) Usage {
	billed := BilledMS(rec)
	gbs := GBSeconds(billed, rec.MemoryMB)
	var reqs int64
	if billed > 0 {
		reqs = 1
	}
	return Usage{Record: *rec, BilledMS: billed, GBSeconds: gbs, Cost: p.Cost(reqs, gbs)}
}

// Rollup is the usage of one tenant's function in one hour (UTC).
//
// Idempotence: LastSeq is the highest invocations-stream sequence applied to
// this rollup. The meter reads the stream strictly in order (an ordered
// consumer from its checkpoint), applies every record of a message (a batch
// of records) in the same update, and updates each rollup with
// compare-and-set, so every record of a message at or below LastSeq for this
// rollup has been applied: a record seen again (a restart from an older
// checkpoint, a second meter on another node, a redelivery) has Seq ≤ LastSeq
// and is skipped. This keeps one number per rollup instead of a set of
// record ids.
type Rollup struct {
	Tenant            string    `json:"tenant"`
	Function          string    `json:"function"`
	Hour              time.Time `json:"hour"`
	Invocations       int64     `json:"invocations"`
	Errors            int64     `json:"errors"`
	Throttled         int64     `json:"throttled"`
	ColdStarts        int64     `json:"cold_starts"`
	BilledInvocations int64     `json:"billed_invocations"`
	BilledMS          int64     `json:"billed_ms"`
	// MBMS is Σ billed ms × memory MB: an exact integer; GB-s = MBMS/1000/1024.
	MBMS    int64  `json:"mb_ms"`
	LastSeq uint64 `json:"last_seq"`
}

// GBSeconds of the rollup.
func (r *Rollup) GBSeconds() float64 { return float64(r.MBMS) / 1000 / 1024 }

func (r *Rollup) add(rec *Record) {
	if rec.Outcome == OutcomeThrottled {
		r.Throttled++
		return
	}
	r.Invocations++
	if rec.Outcome != OutcomeOK {
		r.Errors++
	}
	if rec.Cold {
		r.ColdStarts++
	}
	if b := BilledMS(rec); b > 0 {
		r.BilledInvocations++
		r.BilledMS += b
		r.MBMS += b * int64(rec.MemoryMB)
	}
}

// RollupKey is the KV key of tenant's function in the hour of t.
func RollupKey(tenant, function string, t time.Time) string {
	return tenant + "." + function + "." + t.UTC().Format(hourLayout)
}

// MeterConfig configures a Meter; zero values mean the defaults.
type MeterConfig struct {
	Bus *bus.Bus
	// Prices turn usage into cost in reports; nil means DefaultPrices. A
	// zero price is taken as given: that part of usage is free.
	Prices *Prices
	// MaxAge of the invocations stream (default DefaultRecordRetention).
	MaxAge time.Duration
	// Batch is how many stream messages (each a batch of records) are
	// applied per round at most (default 500).
	Batch  int
	Logger *slog.Logger
	// Now is the clock for the current month (tests); default time.Now.
	Now func() time.Time
}

// MeterStats counts the meter's work since start.
type MeterStats struct {
	Applied    uint64 `json:"applied"`    // records counted into rollups
	Duplicates uint64 `json:"duplicates"` // records seen again and skipped
	Bad        uint64 `json:"bad"`        // records that could not be read
	Checkpoint uint64 `json:"checkpoint"` // stream sequence applied through
}

// Meter turns invocation records into usage: it reads bus.StreamInvocations
// in order, rolls records up per tenant/function/hour in BucketUsage, keeps
// each tenant's GB-seconds of the current month in memory for quotas, and
// answers usage reports.
type Meter struct {
	cfg    MeterConfig
	prices Prices
	log    *slog.Logger
	js     jetstream.JetStream
	kv     jetstream.KeyValue

	applied, duplicates, bad, checkpoint atomic.Uint64

	// month state, owned by the watch goroutine, read through atomics.
	monthly sync.Map // tenant → *atomic.Int64 (MB-ms this month)
	synced  atomic.Bool

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewMeter builds a meter; Start begins metering.
func NewMeter(cfg MeterConfig) *Meter {
	prices := DefaultPrices
	if cfg.Prices != nil {
		prices = *cfg.Prices
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultRecordRetention
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Meter{cfg: cfg, prices: prices, log: lg.With("component", "metering")}
}

// Prices is the meter's price table.
func (m *Meter) Prices() Prices { return m.prices }

// Start ensures the streams and bucket and starts the metering goroutines.
func (m *Meter) Start(ctx context.Context) error {
	b := m.cfg.Bus
	if b == nil {
		return errors.New("meter: a bus is required")
	}
	if _, err := b.Stream(ctx, invocationsStream(m.cfg.MaxAge)); err != nil {
		return fmt.Errorf("meter: %w", err)
	}
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketUsage,
		Description: "Nimbus hourly usage rollups",
		Storage:     jetstream.FileStorage,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("meter: %w", err)
	}
	js, err := jetstream.New(b.Conn)
	if err != nil {
		return fmt.Errorf("meter: jetstream context: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		return errors.New("meter: already started")
	}
	m.js, m.kv = js, kv
	rctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.consume(rctx) }()
	go func() { defer m.wg.Done(); m.watchMonth(rctx) }()
	return nil
}

// Stop stops metering, waiting for its goroutines until ctx ends. Records not
// yet applied are applied by the next start (from the checkpoint).
func (m *Meter) Stop(ctx context.Context) error {
	m.mu.Lock()
	cancel := m.cancel
	m.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("meter: stop: %w", ctx.Err())
	}
}

// Stats reports the meter's counters.
func (m *Meter) Stats() MeterStats {
	return MeterStats{Applied: m.applied.Load(), Duplicates: m.duplicates.Load(), Bad: m.bad.Load(), Checkpoint: m.checkpoint.Load()}
}

// MonthlyGBSeconds is tenant's metered GB-seconds in the current (UTC) month.
// It lags the invocations by the publishing and metering batches.
func (m *Meter) MonthlyGBSeconds(tenant string) float64 {
	if v, ok := m.monthly.Load(tenant); ok {
		return float64(v.(*atomic.Int64).Load()) / 1000 / 1024
	}
	return 0
}

// consume applies the invocations stream in order, from the checkpoint on,
// until ctx ends; after an error it starts again from the checkpoint.
func (m *Meter) consume(ctx context.Context) {
	for ctx.Err() == nil {
		err := m.consumeOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		m.log.Warn("metering paused after an error; resuming from the checkpoint", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

type seqRecord struct {
	seq uint64
	rec Record
}

func (m *Meter) consumeOnce(ctx context.Context) error {
	cp, err := m.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	m.checkpoint.Store(cp)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if cp > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cp+1
	}
	cons, err := m.js.OrderedConsumer(ctx, bus.StreamInvocations, cfg)
	if err != nil {
		return fmt.Errorf("meter: consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(m.cfg.Batch))
	if err != nil {
		return fmt.Errorf("meter: consumer: %w", err)
	}
	defer it.Stop()
	batch := make([]seqRecord, 0, m.cfg.Batch)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("meter: reading invocations: %w", err)
		}
		batch = m.appendMsg(batch[:0], msg)
		// Gather what follows closely, for at most 100 ms, so that usage
		// and quotas lag the invocations by little under steady load.
		until := time.Now().Add(100 * time.Millisecond)
		for msgs := 1; msgs < m.cfg.Batch && time.Now().Before(until); msgs++ {
			msg, err := it.Next(jetstream.NextMaxWait(20 * time.Millisecond))
			if err != nil {
				break
			}
			batch = m.appendMsg(batch, msg)
		}
		for {
			err := m.apply(ctx, batch)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("applying usage failed; retrying the batch", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// appendMsg decodes msg's records, each with the message's sequence;
// unreadable records advance the checkpoint only.
func (m *Meter) appendMsg(batch []seqRecord, msg jetstream.Msg) []seqRecord {
	meta, err := msg.Metadata()
	if err != nil {
		m.bad.Add(1)
		return batch
	}
	// Records go straight into the batch, without their ids (usage needs
	// none): no slice and no id string per record.
	n := len(batch)
	bad := decodeRecords(msg.Data(), false, func(r *Record) {
		if r.Start.IsZero() {
			r.Start = meta.Timestamp
		}
		batch = append(batch, seqRecord{seq: meta.Sequence.Stream, rec: *r})
	})
	m.bad.Add(uint64(bad))
	if len(batch) == n {
		// Counted nowhere; the sequence still moves the checkpoint.
		return append(batch, seqRecord{seq: meta.Sequence.Stream})
	}
	return batch
}

// apply rolls a batch up and moves the checkpoint. Applying a batch again is
// harmless (see Rollup).
func (m *Meter) apply(ctx context.Context, batch []seqRecord) error {
	if len(batch) == 0 {
		return nil
	}
	groups := map[string][]*seqRecord{}
	var keys []string
	// Records come in runs of one function and hour: the key is made once
	// per run, not per record.
	var k, kTenant, kFunction string
	var kHour time.Time
	for i := range batch {
		sr := &batch[i]
		if sr.rec.Tenant == "" {
			continue
		}
		if hour := sr.rec.Start.UTC().Truncate(time.Hour); k == "" || sr.rec.Tenant != kTenant || sr.rec.Function != kFunction || !hour.Equal(kHour) {
			k, kTenant, kFunction, kHour = RollupKey(sr.rec.Tenant, sr.rec.Function, hour), sr.rec.Tenant, sr.rec.Function, hour
		}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], sr)
	}
	for _, k := range keys {
		if err := m.applyKey(ctx, k, groups[k]); err != nil {
			return err
		}
	}
	return m.saveCheckpoint(ctx, batch[len(batch)-1].seq)
}

func (m *Meter) applyKey(ctx context.Context, key string, recs []*seqRecord) error {
	for attempt := 0; ; attempt++ {
		var r Rollup
		var rev uint64
		e, err := m.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			first := recs[0].rec
			r = Rollup{Tenant: first.Tenant, Function: first.Function, Hour: first.Start.UTC().Truncate(time.Hour)}
		case err != nil:
			return fmt.Errorf("meter: rollup %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return fmt.Errorf("meter: rollup %s is unreadable: %w", key, err)
			}
		}
		// Records of one message share its sequence: compare with the
		// sequence the rollup had before this update.
		var applied, dup uint64
		last := r.LastSeq
		for _, sr := range recs {
			if sr.seq <= last {
				dup++
				continue
			}
			r.add(&sr.rec)
			r.LastSeq = max(r.LastSeq, sr.seq)
			applied++
		}
		if applied == 0 {
			m.duplicates.Add(dup)
			return nil
		}
		data, err := json.Marshal(&r)
		if err != nil {
			return fmt.Errorf("meter: rollup %s: %w", key, err)
		}
		if rev == 0 {
			_, err = m.kv.Create(ctx, key, data)
		} else {
			_, err = m.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			m.applied.Add(applied)
			m.duplicates.Add(dup)
			return nil
		}
		if !casConflict(err) || attempt >= 20 {
			return fmt.Errorf("meter: rollup %s: %w", key, err)
		}
	}
}

func casConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func (m *Meter) loadCheckpoint(ctx context.Context) (uint64, error) {
	e, err := m.kv.Get(ctx, checkpointKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("meter: checkpoint: %w", err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meter: checkpoint %q is unreadable: %w", e.Value(), err)
	}
	return n, nil
}

// saveCheckpoint moves the checkpoint forward (never back: another node's
// meter may be ahead).
func (m *Meter) saveCheckpoint(ctx context.Context, seq uint64) error {
	for attempt := 0; ; attempt++ {
		e, err := m.kv.Get(ctx, checkpointKey)
		var rev, cur uint64
		if err == nil {
			rev = e.Revision()
			cur, _ = strconv.ParseUint(string(e.Value()), 10, 64)
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("meter: checkpoint: %w", err)
		}
		if cur >= seq {
			m.checkpoint.Store(cur)
			return nil
		}
		v := []byte(strconv.FormatUint(seq, 10))
		if rev == 0 {
			_, err = m.kv.Create(ctx, checkpointKey, v)
		} else {
			_, err = m.kv.Update(ctx, checkpointKey, v, rev)
		}
		if err == nil {
			m.checkpoint.Store(seq)
			return nil
		}
		if !casConflict(err) || attempt >= 20 {
			return fmt.Errorf("meter: checkpoint: %w", err)
		}
	}
}

// parseRollupKey splits "{tenant}.{function}.{YYYYMMDDHH}".
func parseRollupKey(k string) (tenant, function string, hour time.Time, ok bool) {
	parts := strings.Split(k, ".")
	if len(parts) != 3 {
		return "", "", time.Time{}, false
	}
	h, err := time.Parse(hourLayout, parts[2])
	if err != nil {
		return "", "", time.Time{}, false
	}
	return parts[0], parts[1], h, true
}

// watchMonth keeps the per-tenant totals of the current month from every
// rollup update (its own and other nodes'), so quotas read memory only.
func (m *Meter) watchMonth(ctx context.Context) {
	for ctx.Err() == nil {
		if err := m.watchMonthOnce(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("watching usage rollups failed; retrying", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (m *Meter) watchMonthOnce(ctx context.Context) error {
	w, err := m.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("meter: watch rollups: %w", err)
	}
	defer func() { _ = w.Stop() }()
	month := monthOf(m.cfg.Now())
	perKey := map[string]int64{} // this month's rollup key → MB-ms
	// Until the initial values are in, totals are built aside, so that quotas
	// keep reading the previous totals instead of a partial sum.
	initial := map[string]int64{}
	synced := false
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if monthOf(m.cfg.Now()) != month {
				return nil // a new month: rebuild from zero
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("meter: rollup watch closed")
			}
			if e == nil { // the initial values are in
				m.monthly.Range(func(k, _ any) bool {
					if _, ok := initial[k.(string)]; !ok {
						m.monthly.Delete(k)
					}
					return true
				})
				for t, v := range initial {
					c := new(atomic.Int64)
					c.Store(v)
					m.monthly.Store(t, c)
				}
				synced, initial = true, nil
				m.synced.Store(true)
				continue
			}
			tenant, _, hour, ok := parseRollupKey(e.Key())
			if !ok || monthOf(hour) != month {
				continue
			}
			var r Rollup
			if json.Unmarshal(e.Value(), &r) != nil {
				continue
			}
			delta := r.MBMS - perKey[e.Key()]
			perKey[e.Key()] = r.MBMS
			if !synced {
				initial[tenant] += delta
				continue
			}
			c, _ := m.monthly.LoadOrStore(tenant, new(atomic.Int64))
			c.(*atomic.Int64).Add(delta)
		}
	}
}

func monthOf(t time.Time) string { return t.UTC().Format("200601") }
