package metering

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// A message of the invocations stream holds a batch of records of one
// tenant's function (its subject names both). Three encodings are read:
//
//   - the batch encoding the Publisher writes (version 2): the byte
//     batchMagic, the encoding version, the tenant and the function once,
//     then each record as its length and its fields in a fixed order (see
//     recordEncoder.append). A record's id, start and node are written
//     against the previous record's: the bytes of the id it shares with the
//     previous id (invocation ids of one node share most of theirs), the
//     start as the difference to the previous start, the node only when it
//     changed. That halves a record, and the stream stores, copies and
//     hashes every byte of it;
//   - version 1, written before: the same with every field in full;
//   - JSON, one record per line (records stored before batching were one
//     JSON record per message, which reads the same).
//
// Fields are only ever added at the end: a reader skips the fields it does
// not know and leaves zero the fields an older writer did not write.
// Strings are a uvarint length and the bytes; integers are varints (zig-zag);
// times are Unix nanoseconds.
const (
	batchMagic byte = 0xB7 // never the first byte of JSON text
	batchV1    byte = 1
	batchV2    byte = 2
)

var errShortRecord = errors.New("record cut short")

// appendBatchHeader starts a batch message (version 2) of tenant's function.
func appendBatchHeader(dst []byte, tenant, function string) []byte {
	dst = append(dst, batchMagic, batchV2)
	dst = appendString(dst, tenant)
	return appendString(dst, function)
}

// recordEncoder writes the records of one batch message (version 2); it
// remembers the previous record's id, start and node.
type recordEncoder struct {
	id    string
	start int64
	node  string
}

// append appends r (its tenant and function are the batch's).
func (e *recordEncoder) append(dst []byte, r *Record) []byte {
	var body [128]byte
	b := body[:0]
	shared := commonPrefix(e.id, r.ID)
	b = binary.AppendUvarint(b, uint64(shared))
	b = appendString(b, r.ID[shared:])
	b = binary.AppendVarint(b, int64(r.Version))
	b = appendString(b, r.Trigger)
	var start int64
	if !r.Start.IsZero() {
		start = r.Start.UnixNano()
	}
	b = binary.AppendVarint(b, start-e.start) // wraps around, as the reader's sum does
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
	// The node: 0 when it is the previous record's, else its length + 1.
	if r.Node == e.node {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(r.Node))+1)
		b = append(b, r.Node...)
	}
	e.id, e.start, e.node = r.ID, start, r.Node
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeRecords reads a message of the invocations stream (any encoding,
// see above). It returns the records it could read and how many it could not.
func DecodeRecords(data []byte) (recs []Record, bad int) {
	bad = decodeRecords(data, true, func(r *Record) { recs = append(recs, *r) })
	return recs, bad
}

// decodeRecords calls each with every record of a message it can read (r is
// only valid during the call) and returns how many it could not read.
// Without ids, records are read with an empty ID, which spares an
// allocation per record to a reader that needs none (the meter).
func decodeRecords(data []byte, ids bool, each func(r *Record)) (bad int) {
	if len(data) > 0 && data[0] == batchMagic {
		return decodeBatch(data, ids, each)
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
		if !ids {
			r.ID = ""
		}
		each(&r)
	}
	return bad
}

func decodeBatch(data []byte, ids bool, each func(r *Record)) (bad int) {
	d := decoder{b: data[1:]}
	version := d.byte()
	if (version != batchV1 && version != batchV2) || d.err != nil {
		return 1 // a later encoding version: not ours to read
	}
	tenant, function := d.string(), d.string()
	if d.err != nil || tenant == "" || function == "" {
		return 1
	}
	var (
		node   string // a batch's records almost always share their node
		id     []byte // version 2: the previous record's id and start
		start  int64
		broken bool   // version 2: a record could not be read, so neither can the ones after it
		r      Record // handed to each, which keeps no pointer to it: one allocation per batch
	)
	for len(d.b) > 0 {
		n, k := binary.Uvarint(d.b)
		if k <= 0 || uint64(len(d.b)-k) < n {
			return bad + 1
		}
		rd := decoder{b: d.b[k : k+int(n)]}
		d.b = d.b[k+int(n):]
		if broken {
			bad++
			continue
		}
		r = Record{Tenant: tenant, Function: function}
		if version == batchV1 {
			if ids {
				r.ID = rd.string()
			} else {
				rd.bytes()
			}
		} else {
			shared := rd.uvarint()
			suffix := rd.bytes()
			if shared > uint64(len(id)) {
				rd.err = errShortRecord
			} else {
				id = append(id[:shared], suffix...)
				if ids {
					r.ID = string(id)
				}
			}
		}
		r.Version = int(rd.varint())
		r.Trigger = known(rd.bytes(), knownTriggers)
		ns := rd.varint()
		if version == batchV2 {
			ns += start
			start = ns
		}
		if ns != 0 {
			r.Start = time.Unix(0, ns)
		}
		r.DurationNS = rd.varint()
		r.InitNS = rd.varint()
		r.Cold = rd.byte() == 1
		r.MemoryMB = int(rd.varint())
		r.Outcome = known(rd.bytes(), knownOutcomes)
		r.Status = int(rd.varint())
		if version == batchV1 {
			if b := rd.bytes(); string(b) != node {
				node = string(b)
			}
		} else if n := rd.uvarint(); n > 0 { // 0: the previous record's node
			if n-1 > uint64(len(rd.b)) {
				rd.err = errShortRecord
			} else if b := rd.b[:n-1]; string(b) != node {
				node = string(b)
			}
			rd.b = rd.b[min(n-1, uint64(len(rd.b))):]
		}
		r.Node = node
		// Fields a later writer added after these are skipped.
		if rd.err != nil {
			bad++
			broken = version == batchV2
			continue
		}
		each(&r)
	}
	return bad
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

func (d *decoder) uvarint() uint64 {
	if len(d.b) == 0 {
		return 0
	}
	v, k := binary.Uvarint(d.b)
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
