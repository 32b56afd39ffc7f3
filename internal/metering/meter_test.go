package metering

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

type meterEnv struct {
	bus *bus.Bus
	pub *Publisher
	m   *Meter
}

func startMeter(t *testing.T, b *bus.Bus) *Meter {
	t.Helper()
	m := NewMeter(MeterConfig{Bus: b, Batch: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start meter: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("stop meter: %v", err)
		}
	})
	return m
}

func newMeterEnv(t *testing.T) *meterEnv {
	t.Helper()
	b := openBus(t)
	pub := NewPublisher(PublisherConfig{Bus: b, Node: "node-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Start(ctx); err != nil {
		t.Fatalf("start publisher: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pub.Stop(ctx)
	})
	return &meterEnv{bus: b, pub: pub, m: startMeter(t, b)}
}

func waitApplied(t *testing.T, m *Meter, n uint64) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if s := m.Stats(); s.Applied+s.Duplicates < n {
			return fmt.Errorf("meter applied %d (+%d duplicates) of %d", s.Applied, s.Duplicates, n)
		}
		return nil
	})
}

func report(t *testing.T, m *Meter, q UsageQuery) UsageReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := m.Report(ctx, q)
	if err != nil {
		t.Fatalf("report %+v: %v", q, err)
	}
	return rep
}

// expected sums records the way the report must.
type expected struct {
	invocations, errors, throttled, cold, billedInv, billedMS, mbms int64
}

func (e *expected) add(r *Record) {
	if r.Outcome == OutcomeThrottled {
		e.throttled++
		return
	}
	e.invocations++
	if r.Outcome != OutcomeOK {
		e.errors++
	}
	if r.Cold {
		e.cold++
	}
	// Independent of BilledMS: ceil to whole ms, min 1 ms, when it ran.
	if r.DurationNS > 0 && r.Outcome != OutcomeStartFailed {
		ms := int64(math.Ceil(float64(r.DurationNS) / 1e6))
		e.billedInv++
		e.billedMS += ms
		e.mbms += ms * int64(r.MemoryMB)
	}
}

func checkRow(t *testing.T, what string, got UsageRow, want expected, p Prices) {
	t.Helper()
	gbs := float64(want.mbms) / 1000 / 1024
	if got.Invocations != want.invocations || got.Errors != want.errors || got.Throttled != want.throttled ||
		got.ColdStarts != want.cold || got.BilledInvocations != want.billedInv || got.BilledMS != want.billedMS ||
		math.Abs(got.GBSeconds-gbs) > 1e-9 || math.Abs(got.Cost-p.Cost(want.billedInv, gbs)) > 1e-9 {
		t.Errorf("%s: got %+v, want %+v (GB-s %v)", what, got, want, gbs)
	}
}

var (
	outcomes = []string{"ok", "ok", "ok", "ok", "error", "timeout", "crashed", "throttled", "start_failed", "out_of_memory", "canceled"}
	memories = []int{128, 256, 512, 1024, 1769, 3008, 10240}
)

func randomRecord(r *rand.Rand, tenant string, fns []string, now time.Time, i int) Record {
	rec := Record{
		ID: fmt.Sprintf("%s-%d", tenant, i), Tenant: tenant, Function: fns[r.IntN(len(fns))], Version: 1 + r.IntN(3),
		Trigger: []string{"http", "async", "schedule"}[r.IntN(3)],
		Start:   now.Add(-time.Duration(r.Int64N(int64(72 * time.Hour)))),
		Cold:    r.IntN(5) == 0, MemoryMB: memories[r.IntN(len(memories))], Outcome: outcomes[r.IntN(len(outcomes))],
	}
	switch r.IntN(4) {
	case 0: // sub-millisecond
		rec.DurationNS = 1 + r.Int64N(999_999)
	case 1: // exact milliseconds
		rec.DurationNS = (1 + r.Int64N(5000)) * 1_000_000
	case 2:
		rec.DurationNS = r.Int64N(30_000_000_000)
	case 3:
		rec.DurationNS = r.Int64N(5_000_000)
	}
	if rec.Outcome == OutcomeThrottled || rec.Outcome == OutcomeStartFailed {
		rec.DurationNS = 0
	}
	return rec
}

// TestUsageReportEqualsSumOfRecords is the property test: for random
// invocation mixes, the report's rows and totals equal the sums of the
// individual records, GB-s follow duration × memory with 1 ms rounding, and a
// function with no invocations accrues exactly zero.
func TestUsageReportEqualsSumOfRecords(t *testing.T) {
	env := newMeterEnv(t)
	now := time.Now()
	var published uint64
	for iter := range 4 {
		seed := uint64(time.Now().UnixNano())
		r := rand.New(rand.NewPCG(seed, uint64(iter)))
		tenant := fmt.Sprintf("t%d", iter)
		fns := []string{"alpha", "beta", "gamma", "delta"}[:1+r.IntN(4)]
		n := 50 + r.IntN(300)
		byFn := map[string]*expected{}
		byDay := map[string]*expected{}
		var total, month expected
		for i := range n {
			rec := randomRecord(r, tenant, fns, now, i)
			env.pub.Record(&rec)
			for m, k := range map[*map[string]*expected]string{&byFn: rec.Function, &byDay: rec.Start.UTC().Format("2006-01-02")} {
				if (*m)[k] == nil {
					(*m)[k] = &expected{}
				}
				(*m)[k].add(&rec)
			}
			total.add(&rec)
			if monthOf(rec.Start) == monthOf(time.Now()) {
				month.add(&rec)
			}
		}
		published += uint64(n)
		waitApplied(t, env.m, published)
		t.Logf("seed %d: tenant %s, %d records over %d functions", seed, tenant, n, len(fns))

		p := env.m.Prices()
		rep := report(t, env.m, UsageQuery{Tenant: tenant, Since: now.Add(-96 * time.Hour)})
		checkRow(t, tenant+" total", rep.Total, total, p)
		if len(rep.Rows) != len(byFn) {
			t.Errorf("%s: %d rows by function, want %d", tenant, len(rep.Rows), len(byFn))
		}
		for _, row := range rep.Rows {
			checkRow(t, tenant+" function "+row.Key, row, *byFn[row.Key], p)
		}
		days := report(t, env.m, UsageQuery{Tenant: tenant, By: "day"})
		checkRow(t, tenant+" total by day", days.Total, total, p)
		for _, row := range days.Rows {
			checkRow(t, tenant+" day "+row.Key, row, *byDay[row.Key], p)
		}
		hours := report(t, env.m, UsageQuery{Tenant: tenant, By: "hour"})
		checkRow(t, tenant+" total by hour", hours.Total, total, p)

		// A function with no invocations accrues exactly zero.
		idle := report(t, env.m, UsageQuery{Tenant: tenant, Function: "idle"})
		if len(idle.Rows) != 0 || idle.Total != (UsageRow{Key: "total"}) {
			t.Errorf("idle function accrued %+v", idle)
		}
		eventually(t, 20*time.Second, func() error {
			got, want := env.m.MonthlyGBSeconds(tenant), float64(month.mbms)/1000/1024
			if math.Abs(got-want) > 1e-9 {
				return fmt.Errorf("monthly GB-s of %s = %v, want %v", tenant, got, want)
			}
			return nil
		})
	}
	// Every tenant (admin view) adds up too.
	all := report(t, env.m, UsageQuery{By: "tenant"})
	if len(all.Rows) != 4 {
		t.Errorf("all tenants: %d rows", len(all.Rows))
	}
	var sum int64
	for _, row := range all.Rows {
		sum += row.Invocations + row.Throttled
	}
	if sum != int64(published) || all.Total.Invocations+all.Total.Throttled != int64(published) {
		t.Errorf("all tenants count %d (total %+v), want %d", sum, all.Total, published)
	}
	if s := env.pub.Stats(); s.Published != published || s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("publisher stats %+v", s)
	}
	// Each invocation left its record, once, on the invocations stream, in
	// batch messages (far fewer messages than records), and its usage
	// derives from it.
	recs, msgs := storedRecords(t, env.bus)
	if uint64(len(recs)) != published {
		t.Errorf("invocations stream holds %d records, want %d", len(recs), published)
	}
	if msgs >= uint64(len(recs)) {
		t.Errorf("%d records took %d messages: not batched", len(recs), msgs)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.ID] {
			t.Fatalf("record %s stored twice", r.ID)
		}
		seen[r.ID] = true
	}
	u := env.m.Prices().Usage(&recs[0])
	if u.Tenant == "" || u.Node != "node-1" || u.BilledMS != BilledMS(&recs[0]) ||
		u.GBSeconds != GBSeconds(u.BilledMS, recs[0].MemoryMB) || (u.BilledMS > 0) != (u.Cost > 0) {
		t.Errorf("usage of %+v: %+v", recs[0], u)
	}
}

// storedRecords reads every record on the invocations stream and counts the
// messages that carried them.
func storedRecords(t *testing.T, b *bus.Bus) (recs []Record, msgs uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := b.JS.Stream(ctx, bus.StreamInvocations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		rs, bad := DecodeRecords(m.Data)
		if bad != 0 {
			t.Fatalf("message %d has %d unreadable records: %s", seq, bad, m.Data)
		}
		recs = append(recs, rs...)
	}
	return recs, info.State.Msgs
}

// TestRedeliveredRecordsAreNotDoubleCounted replays the stream from the start
// (a meter that crashed before saving its checkpoint), runs a second meter
// at the same time, and sends one batch message twice (a publisher retry).
func TestRedeliveredRecordsAreNotDoubleCounted(t *testing.T) {
	env := newMeterEnv(t)
	now := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	var want expected
	const n = 200
	for i := range n {
		rec := randomRecord(r, "acme", []string{"hello", "world"}, now, i)
		env.pub.Record(&rec)
		want.add(&rec)
	}
	waitApplied(t, env.m, n)
	p := env.m.Prices()
	checkRow(t, "first pass", report(t, env.m, UsageQuery{Tenant: "acme"}).Total, want, p)

	// A batch sent again carries its message id: the stream keeps one copy.
	ctx := context.Background()
	st, err := env.bus.JS.Stream(ctx, bus.StreamInvocations)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Header.Get(jetstream.MsgIDHeader) == "" {
		t.Fatalf("batch message without an id: %v", first.Header)
	}
	ack, err := env.bus.JS.PublishMsg(ctx, &nats.Msg{Subject: first.Subject, Header: first.Header, Data: first.Data})
	if err != nil || !ack.Duplicate {
		t.Fatalf("batch sent again: %+v %v", ack, err)
	}

	// Forget the checkpoint, as if the meter died before saving it, and let a
	// second meter read the stream from the start as well.
	kv, err := env.bus.JS.KeyValue(ctx, BucketUsage)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, checkpointKey); err != nil {
		t.Fatal(err)
	}
	second := startMeter(t, env.bus)
	waitApplied(t, second, n)
	if s := second.Stats(); s.Applied != 0 || s.Duplicates != n {
		t.Errorf("second meter: %+v, want all %d records seen as duplicates", s, n)
	}
	checkRow(t, "after replay", report(t, env.m, UsageQuery{Tenant: "acme"}).Total, want, p)
	// The meter counts a batch before it saves the checkpoint past it.
	eventually(t, 30*time.Second, func() error {
		e, err := kv.Get(ctx, checkpointKey)
		if err != nil {
			return fmt.Errorf("checkpoint not saved again: %w", err)
		}
		if string(e.Value()) == "" {
			return errors.New("checkpoint saved empty")
		}
		return nil
	})
}

func TestReportRejectsBadQueries(t *testing.T) {
	env := newMeterEnv(t)
	for _, q := range []UsageQuery{{Tenant: "a.*"}, {Tenant: "acme", Function: ">"}, {Tenant: "acme", By: "week"}} {
		if _, err := env.m.Report(context.Background(), q); err == nil {
			t.Errorf("report %+v: no error", q)
		}
	}
}

func TestPublisherNeverBlocksAndCountsDrops(t *testing.T) {
	b := openBus(t)
	pub := NewPublisher(PublisherConfig{Bus: b, Buffer: 8})
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec := Record{ID: "x", Tenant: "acme", Function: "f", Outcome: "ok", DurationNS: 1}
		for range 1000 {
			pub.Record(&rec) // not started: the buffer fills
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Record blocked on a full buffer")
	}
	if s := pub.Stats(); s.Dropped != 992 {
		t.Fatalf("dropped %d, want 992", s.Dropped)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if s := pub.Stats(); s.Published != 8 {
			return fmt.Errorf("published %d", s.Published)
		}
		return nil
	})
	bad := Record{ID: "y", Tenant: "Bad.Tenant", Function: "f"}
	pub.Record(&bad)
	if err := pub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The 8 buffered records left in one batch message.
	st, _ := b.JS.Stream(ctx, bus.StreamInvocations)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := pub.Stats(); s.Published != 8 || s.Failed != 1 || s.Dropped != 992 || info.State.Msgs != 1 {
		t.Fatalf("stats %+v, stream msgs %d", s, info.State.Msgs)
	}
	var _ jetstream.Stream = st
}

// TestPublisherBatchesAndFlushesOnStop checks both ends of a batch: a full
// buffer is published without waiting for the flush interval (an hour here),
// no message holds more than BatchRecords records, and Stop publishes what
// is left.
func TestPublisherBatchesAndFlushesOnStop(t *testing.T) {
	b := openBus(t)
	pub := NewPublisher(PublisherConfig{Bus: b, Node: "n", BatchRecords: 10, FlushInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := func(i int) {
		r := Record{ID: fmt.Sprint("r", i), Tenant: "acme", Function: []string{"f", "g"}[i%2], Outcome: "ok", DurationNS: 1, MemoryMB: 128}
		pub.Record(&r)
	}
	for i := range 95 {
		rec(i)
	}
	eventually(t, 20*time.Second, func() error {
		if s := pub.Stats(); s.Published < 85 {
			return fmt.Errorf("published %d of 95 while the buffer held full batches", s.Published)
		}
		return nil
	})
	for i := 95; i < 100; i++ {
		rec(i)
	}
	if err := pub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s := pub.Stats(); s.Published != 100 || s.Failed != 0 || s.Dropped != 0 {
		t.Fatalf("after stop: %+v", s)
	}
	st, err := b.JS.Stream(ctx, bus.StreamInvocations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		recs, bad := DecodeRecords(m.Data)
		if bad != 0 || len(recs) == 0 || len(recs) > 10 {
			t.Fatalf("message %d: %d records (%d bad), want 1 to 10", seq, len(recs), bad)
		}
		for _, r := range recs {
			if r.Node != "n" || m.Subject != bus.Subject(bus.SubjectInvocations, r.Tenant, r.Function) || ids[r.ID] {
				t.Fatalf("record %+v in message %d on %s", r, seq, m.Subject)
			}
			ids[r.ID] = true
		}
	}
	if len(ids) != 100 || info.State.Msgs >= 100 {
		t.Fatalf("%d records in %d messages", len(ids), info.State.Msgs)
	}
}
