package metering

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// A message of the invocations stream holds a batch of records of one
// tenant's function (its subject names both). Two encodings are read:
//
//   - the batch encoding the Publisher writes: the byte batchMagic, the
//     encoding version (1), the tenant and the function once, then each
//     record as its length and its fields in a fixed order (see
//     appendRecord). Fields are only ever added at the end: a reader skips
//     the fields it does not know and leaves zero the fields an older
//     writer did not write;
//   - JSON, one record per line (records stored before batching were one
//     JSON record per message, which reads the same).
//
// Strings are a uvarint length and the bytes; integers are varints (zig-zag);
// times are Unix nanoseconds.
const (
	batchMagic   byte = 0xB7 // never the first byte of JSON text
	batchVersion byte = 1
)

var errShortRecord = errors.New("record cut short")

// appendBatchHeader starts a batch message of tenant's function.
func appendBatchHeader(dst []byte, tenant, function string) []byte {
	dst = append(dst, batchMagic, batchVersion)
	dst = appendString(dst, tenant)
	return appendString(dst, function)
}

// appendRecord appends r (its tenant and function are the batch's).
func appendRecord(dst []byte, r *Record) []byte {
	var body [256]byte
	b := body[:0]
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

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeRecords reads a message of the invocations stream (either encoding,
// see above). It returns the records it could read and how many it could not.
func DecodeRecords(data []byte) (recs []Record, bad int) {
	if len(data) > 0 && data[0] == batchMagic {
		return decodeBatch(data)
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Tenant == "" || r.Function == "" {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad
}

func decodeBatch(data []byte) (recs []Record, bad int) {
	d := decoder{b: data[1:]}
	if v := d.byte(); v != batchVersion || d.err != nil {
		return nil, 1 // a later encoding version: not ours to read
	}
	tenant, function := d.string(), d.string()
	if d.err != nil || tenant == "" || function == "" {
		return nil, 1
	}
	var node string // a batch's records almost always share their node
	for len(d.b) > 0 {
		n, k := binary.Uvarint(d.b)
		if k <= 0 || uint64(len(d.b)-k) < n {
			return recs, bad + 1
		}
		if recs == nil {
			recs = make([]Record, 0, len(d.b)/(k+int(n)))
		}
		rd := decoder{b: d.b[k : k+int(n)]}
		d.b = d.b[k+int(n):]
		r := Record{Tenant: tenant, Function: function}
		r.ID = rd.string()
		r.Version = int(rd.varint())
		r.Trigger = known(rd.bytes(), knownTriggers)
		if ns := rd.varint(); ns != 0 {
			r.Start = time.Unix(0, ns)
		}
		r.DurationNS = rd.varint()
		r.InitNS = rd.varint()
		r.Cold = rd.byte() == 1
		r.MemoryMB = int(rd.varint())
		r.Outcome = known(rd.bytes(), knownOutcomes)
		r.Status = int(rd.varint())
		if b := rd.bytes(); string(b) != node {
			node = string(b)
		}
		r.Node = node
		// Fields a later writer added after these are skipped.
		if rd.err != nil {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad
}

// Common values, so that decoding them allocates nothing.
var (
	knownTriggers = []string{"http", "async", "schedule", "topic", "queue", "kv", "objects", "mqtt"}
	knownOutcomes = []string{OutcomeOK, OutcomeError, OutcomeCrashed, OutcomeTimeout, OutcomeOutOfMemory, OutcomeBadResponse,
		OutcomeStartFailed, OutcomeThrottled, OutcomeCanceled, OutcomeBadCode, OutcomeFunctionErr}
)

// decoder reads fields; past the end every field reads as zero (a record
// written before the field existed), a malformed field sets err.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) varint() int64 {
	if len(d.b) == 0 {
		return 0
	}
	v, k := binary.Varint(d.b)
	if k <= 0 {
		d.err, d.b = errShortRecord, nil
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) bytes() []byte {
	if len(d.b) == 0 {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || uint64(len(d.b)-k) < n {
		d.err, d.b = errShortRecord, nil
		return nil
	}
	s := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return s
}

func (d *decoder) string() string { return string(d.bytes()) }

// known returns the entry of common equal to b (to share its memory), or b
// as a new string.
func known(b []byte, common []string) string {
	for _, c := range common {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}
