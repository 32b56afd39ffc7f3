package metering

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func encodeBatch(recs []Record) []byte {
	b := appendBatchHeader(nil, recs[0].Tenant, recs[0].Function)
	for i := range recs {
		b = appendRecord(b, &recs[i])
	}
	return b
}

func TestBatchEncodingRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	now := time.Now()
	var recs []Record
	for i := range 300 {
		rec := randomRecord(r, "acme", []string{"hello"}, now, i)
		rec.Node, rec.Status, rec.InitNS = "node-1", 200+i%5, int64(i)*1000
		if i%7 == 0 {
			rec.Trigger, rec.Outcome, rec.Node = "custom-trigger", "something-new", strings.Repeat("n", 300)
		}
		if i%11 == 0 {
			rec.Start = time.Time{}
		}
		if i%13 == 0 {
			rec.DurationNS, rec.Version, rec.MemoryMB = -1, 0, 0
		}
		recs = append(recs, rec)
	}
	got, bad := DecodeRecords(encodeBatch(recs))
	if bad != 0 || len(got) != len(recs) {
		t.Fatalf("decoded %d records (%d bad) of %d", len(got), bad, len(recs))
	}
	for i := range recs {
		want := recs[i]
		if !want.Start.IsZero() {
			want.Start = time.Unix(0, want.Start.UnixNano())
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, got[i], want)
		}
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

	// A later writer appends a field: this reader skips it.
	b := appendBatchHeader(nil, "acme", "f")
	body := appendRecord(nil, &rec)
	_, k := binary.Uvarint(body)
	body = binary.AppendVarint(body[k:], 42) // the new field
	b = append(binary.AppendUvarint(b, uint64(len(body))), body...)
	b = appendRecord(b, &rec)
	got, bad = DecodeRecords(b)
	want := rec
	want.Start = time.Unix(100, 0)
	if bad != 0 || len(got) != 2 || got[0] != want || got[1] != want {
		t.Fatalf("later field: %+v %d", got, bad)
	}
	// An earlier writer wrote fewer fields: the rest read as zero.
	b = appendBatchHeader(nil, "acme", "f")
	short := appendString(nil, "early")
	b = append(binary.AppendUvarint(b, uint64(len(short))), short...)
	got, bad = DecodeRecords(b)
	if bad != 0 || len(got) != 1 || got[0] != (Record{ID: "early", Tenant: "acme", Function: "f"}) {
		t.Fatalf("earlier writer: %+v %d", got, bad)
	}
	// A cut message keeps the records before the cut.
	full := encodeBatch([]Record{rec, rec, rec})
	got, bad = DecodeRecords(full[:len(full)-3])
	if len(got) != 2 || bad != 1 {
		t.Fatalf("cut message: %d records, %d bad", len(got), bad)
	}
}

func FuzzDecodeRecords(f *testing.F) {
	rec := Record{ID: "a", Tenant: "acme", Function: "f", Trigger: "http", Outcome: "ok", DurationNS: 5, MemoryMB: 128, Start: time.Unix(100, 0)}
	f.Add(encodeBatch([]Record{rec, rec}))
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
