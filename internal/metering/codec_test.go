package metering

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nuid"
)

func encodeBatch(recs []Record) []byte {
	b := appendBatchHeader(nil, recs[0].Tenant, recs[0].Function)
	var enc recordEncoder
	for i := range recs {
		b = enc.append(b, &recs[i])
	}
	return b
}

// encodeBatchV1 writes version 1, as the Publisher did before version 2:
// stored messages of that encoding must stay readable.
func encodeBatchV1(recs []Record) []byte {
	b := append([]byte{batchMagic, batchV1}, appendString(nil, recs[0].Tenant)...)
	b = appendString(b, recs[0].Function)
	for i := range recs {
		b = appendRecordV1(b, &recs[i])
	}
	return b
}

func appendRecordV1(dst []byte, r *Record) []byte {
	var b []byte
	b = appendString(b, r.ID)
	b = binary.AppendVarint(b, int64(r.Version))
	b = appendString(b, r.Trigger)
	var start int64
	if !r.Start.IsZero() {
		start = r.Start.UnixNano()
	}
	b = binary.AppendVarint(b, start)
	b = binary.AppendVarint(b, r.DurationNS)
	b = binary.AppendVarint(b, r.InitNS)
	cold := byte(0)
	if r.Cold {
		cold = 1
	}
	b = append(b, cold)
	b = binary.AppendVarint(b, int64(r.MemoryMB))
	b = appendString(b, r.Outcome)
	b = binary.AppendVarint(b, int64(r.Status))
	b = appendString(b, r.Node)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

var encodings = []struct {
	name   string
	encode func([]Record) []byte
}{{"v2", encodeBatch}, {"v1", encodeBatchV1}}

func TestBatchEncodingRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	now := time.Now()
	var recs []Record
	for i := range 300 {
		rec := randomRecord(r, "acme", []string{"hello"}, now, i)
		rec.Node, rec.Status, rec.InitNS = "node-1", 200+i%5, int64(i)*1000
		if i%3 == 0 {
			rec.ID = nuid.Next() // ids of one node share most of their bytes
		}
		if i%7 == 0 {
			rec.Trigger, rec.Outcome, rec.Node = "custom-trigger", "something-new", strings.Repeat("n", 300)
		}
		if i%11 == 0 {
			rec.Start = time.Time{}
		}
		if i%13 == 0 {
			rec.DurationNS, rec.Version, rec.MemoryMB = -1, 0, 0
		}
		if i%17 == 0 {
			rec.ID, rec.Node = "", ""
		}
		if i%19 == 0 {
			rec.Start = time.Unix(0, math.MaxInt64-int64(i)) // far apart: the difference wraps around
		}
		recs = append(recs, rec)
	}
	for _, e := range encodings {
		got, bad := DecodeRecords(e.encode(recs))
		if bad != 0 || len(got) != len(recs) {
			t.Fatalf("%s: decoded %d records (%d bad) of %d", e.name, len(got), bad, len(recs))
		}
		for i := range recs {
			want := recs[i]
			if !want.Start.IsZero() {
				want.Start = time.Unix(0, want.Start.UnixNano())
			}
			if !reflect.DeepEqual(got[i], want) {
				t.Fatalf("%s: record %d:\n got %+v\nwant %+v", e.name, i, got[i], want)
			}
		}
		// Without ids (the meter's way) every other field is the same.
		i := 0
		if bad := decodeRecords(e.encode(recs), false, func(r *Record) {
			want := got[i]
			want.ID = ""
			if *r != want {
				t.Fatalf("%s: record %d without ids:\n got %+v\nwant %+v", e.name, i, *r, want)
			}
			i++
		}); bad != 0 || i != len(recs) {
			t.Fatalf("%s: without ids: %d records, %d bad", e.name, i, bad)
		}
	}
}

// TestBatchEncodingIsSmall: a record of a warm HTTP invocation is about
// half its version 1 size.
func TestBatchEncodingIsSmall(t *testing.T) {
	now := time.Now()
	var recs []Record
	for i := range 256 {
		recs = append(recs, Record{ID: nuid.Next(), Tenant: "acme", Function: "hello", Version: 3, Trigger: "http",
			Start: now.Add(time.Duration(i) * 30 * time.Microsecond), DurationNS: 12_000, MemoryMB: 128, Outcome: "ok", Status: 200, Node: "node-1"})
	}
	v1, v2 := len(encodeBatchV1(recs)), len(encodeBatch(recs))
	t.Logf("256 records: version 1 %d bytes, version 2 %d bytes", v1, v2)
	if v2 > v1*6/10 {
		t.Fatalf("version 2 takes %d bytes, version 1 %d", v2, v1)
	}
}

func TestDecodeRecordsReadsJSONAndLaterFields(t *testing.T) {
	rec := Record{ID: "a", Tenant: "acme", Function: "f", Outcome: "ok", DurationNS: 5, MemoryMB: 128, Start: time.Unix(100, 0).UTC()}
	one, _ := json.Marshal(&rec)
	got, bad := DecodeRecords(one) // a message stored before batching
	if bad != 0 || len(got) != 1 || got[0] != rec {
		t.Fatalf("single JSON record: %+v %d", got, bad)
	}
	got, bad = DecodeRecords([]byte(string(one) + "\n{bad\n" + string(one) + "\n"))
	if bad != 1 || len(got) != 2 {
		t.Fatalf("JSON lines: %d records, %d bad", len(got), bad)
	}
	want := rec
	want.Start = time.Unix(100, 0)

	// A later writer appends a field: this reader skips it.
	for _, v := range []struct {
		name   string
		header []byte
		append func(dst []byte, r *Record) []byte
	}{
		{"v1", []byte{batchMagic, batchV1, 4, 'a', 'c', 'm', 'e', 1, 'f'}, appendRecordV1},
		{"v2", appendBatchHeader(nil, "acme", "f"), new(recordEncoder).append},
	} {
		b := v.header
		body := v.append(nil, &rec)
		_, k := binary.Uvarint(body)
		body = binary.AppendVarint(body[k:], 42) // the new field
		b = append(binary.AppendUvarint(b, uint64(len(body))), body...)
		b = v.append(b, &rec)
		got, bad = DecodeRecords(b)
		if bad != 0 || len(got) != 2 || got[0] != want || got[1] != want {
			t.Fatalf("%s: later field: %+v %d", v.name, got, bad)
		}
	}
	// An earlier writer wrote fewer fields: the rest read as zero.
	for _, v := range []struct {
		name         string
		header, body []byte
	}{
		{"v1", []byte{batchMagic, batchV1, 4, 'a', 'c', 'm', 'e', 1, 'f'}, appendString(nil, "early")},
		{"v2", appendBatchHeader(nil, "acme", "f"), appendString([]byte{0}, "early")},
	} {
		b := append(binary.AppendUvarint(v.header, uint64(len(v.body))), v.body...)
		got, bad = DecodeRecords(b)
		if bad != 0 || len(got) != 1 || got[0] != (Record{ID: "early", Tenant: "acme", Function: "f"}) {
			t.Fatalf("%s: earlier writer: %+v %d", v.name, got, bad)
		}
	}
	// A cut message keeps the records before the cut.
	for _, e := range encodings {
		full := e.encode([]Record{rec, rec, rec})
		got, bad = DecodeRecords(full[:len(full)-3])
		if len(got) != 2 || bad != 1 {
			t.Fatalf("%s: cut message: %d records, %d bad", e.name, len(got), bad)
		}
	}
	// Version 2: a record that cannot be read (an id sharing more bytes
	// than the previous id has) makes the records after it unreadable too.
	b := appendBatchHeader(nil, "acme", "f")
	var enc recordEncoder
	b = enc.append(b, &rec)
	body := enc.append(nil, &rec)
	_, k := binary.Uvarint(body)
	body = append([]byte{9}, body[k+1:]...)
	b = append(binary.AppendUvarint(b, uint64(len(body))), body...)
	b = enc.append(b, &rec)
	got, bad = DecodeRecords(b)
	if len(got) != 1 || bad != 2 || got[0] != want {
		t.Fatalf("broken chain: %+v, %d bad", got, bad)
	}
	// A later encoding version is not read.
	b = appendBatchHeader(nil, "acme", "f")
	b[1] = 3
	if got, bad = DecodeRecords(enc.append(b, &rec)); len(got) != 0 || bad != 1 {
		t.Fatalf("version 3: %+v, %d bad", got, bad)
	}
}

func FuzzDecodeRecords(f *testing.F) {
	rec := Record{ID: "a", Tenant: "acme", Function: "f", Trigger: "http", Outcome: "ok", DurationNS: 5, MemoryMB: 128, Start: time.Unix(100, 0)}
	f.Add(encodeBatch([]Record{rec, rec}))
	f.Add(encodeBatchV1([]Record{rec, rec}))
	one, _ := json.Marshal(&rec)
	f.Add(one)
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, bad := DecodeRecords(data)
		if bad < 0 || len(recs) > len(data) {
			t.Fatalf("%d records, %d bad from %d bytes", len(recs), bad, len(data))
		}
		for _, r := range recs {
			if r.Tenant == "" || r.Function == "" {
				t.Fatalf("record without tenant or function: %+v", r)
			}
		}
	})
}
