package telemetry

import (
	"encoding/binary"
	"math/bits"
)

// The OTLP/HTTP binary encoding: an ExportTraceServiceRequest in protobuf
// wire format (opentelemetry-proto, collector/trace/v1 and trace/v1),
// written directly. Field numbers, from the .proto files:
//
//	ExportTraceServiceRequest: resource_spans 1
//	ResourceSpans:   resource 1, scope_spans 2
//	Resource:        attributes 1
//	ScopeSpans:      scope 1, spans 2
//	Scope:           name 1
//	Span:            trace_id 1, span_id 2, trace_state 3, parent_span_id 4,
//	                 name 5, kind 6, start_time_unix_nano 7 (fixed64),
//	                 end_time_unix_nano 8 (fixed64), attributes 9,
//	                 status 15, flags 16 (fixed32)
//	Status:          message 2, code 3
//	KeyValue:        key 1, value 2
//	AnyValue:        string_value 1, bool_value 2, int_value 3, double_value 4
//
// Fields at their default value (zero, empty) are left out, as proto3 does.

// Wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

func appendTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func appendBytesField(b []byte, field int, v []byte) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStringField(b []byte, field int, v string) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// uvarintLen is the encoded size of v as a varint.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// stringFieldLen is the encoded size of a length-delimited field (number < 16).
func stringFieldLen(n int) int { return 1 + uvarintLen(uint64(n)) + n }

// anyValueLen is the encoded size of a's AnyValue message.
func anyValueLen(a *Attr) int {
	switch a.kind {
	case attrString:
		return stringFieldLen(len(a.s))
	case attrInt:
		return 1 + uvarintLen(uint64(a.n))
	case attrFloat:
		return 1 + 8
	case attrBool:
		return 1 + 1
	}
	return 0
}

// keyValueLen is the encoded size of a's KeyValue message.
func keyValueLen(a *Attr) int {
	return stringFieldLen(len(a.Key)) + stringFieldLen(anyValueLen(a))
}

// appendKeyValues appends attrs as repeated KeyValue fields numbered field.
func appendKeyValues(b []byte, field int, attrs []Attr) []byte {
	for i := range attrs {
		a := &attrs[i]
		b = appendTag(b, field, wireBytes)
		b = binary.AppendUvarint(b, uint64(keyValueLen(a)))
		b = appendStringField(b, 1, a.Key)
		b = appendTag(b, 2, wireBytes)
		b = binary.AppendUvarint(b, uint64(anyValueLen(a)))
		switch a.kind {
		case attrString:
			b = appendStringField(b, 1, a.s)
		case attrBool:
			b = appendTag(b, 2, wireVarint)
			b = append(b, byte(a.n&1))
		case attrInt:
			b = appendTag(b, 3, wireVarint)
			b = binary.AppendUvarint(b, uint64(a.n))
		case attrFloat:
			b = appendTag(b, 4, wireFixed64)
			b = binary.LittleEndian.AppendUint64(b, uint64(a.n)) // the float's bits
		}
	}
	return b
}

// appendSpanProto appends the fields of s's Span message (without its own
// tag and length).
func appendSpanProto(b []byte, s *Span) []byte {
	b = appendBytesField(b, 1, s.sc.TraceID[:])
	b = appendBytesField(b, 2, s.sc.SpanID[:])
	if s.sc.State != "" {
		b = appendStringField(b, 3, s.sc.State)
	}
	if s.parent.IsValid() {
		b = appendBytesField(b, 4, s.parent[:])
	}
	b = appendStringField(b, 5, s.name)
	if s.kind != 0 {
		b = appendTag(b, 6, wireVarint)
		b = binary.AppendUvarint(b, uint64(s.kind))
	}
	b = appendTag(b, 7, wireFixed64)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.start))
	b = appendTag(b, 8, wireFixed64)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.end))
	b = appendKeyValues(b, 9, s.attrs)
	if s.status != 0 || s.message != "" {
		n := 0
		if s.message != "" {
			n += stringFieldLen(len(s.message))
		}
		if s.status != 0 {
			n += 1 + uvarintLen(uint64(s.status))
		}
		b = appendTag(b, 15, wireBytes)
		b = binary.AppendUvarint(b, uint64(n))
		if s.message != "" {
			b = appendStringField(b, 2, s.message)
		}
		if s.status != 0 {
			b = appendTag(b, 3, wireVarint)
			b = binary.AppendUvarint(b, uint64(s.status))
		}
	}
	if s.sc.Flags != 0 {
		b = appendTag(b, 16, wireFixed32)
		b = binary.LittleEndian.AppendUint32(b, uint32(s.sc.Flags))
	}
	return b
}

// scopeName is the instrumentation scope of every span Nimbus makes.
const scopeName = "github.com/nimbusfn/nimbus"

// appendExportProto appends the OTLP protobuf export of spans to b. The
// spans are encoded first into scratch (returned for reuse), since their
// total size goes in front of them.
func (t *Tracer) appendExportProto(b, scratch []byte, spans []*Span) (out, scratchOut []byte) {
	body := scratch[:0]
	var one []byte
	for _, s := range spans {
		start := len(body)
		body = appendSpanProto(body, s)
		// The span's tag and length go in front of it: encode them after
		// it, then rotate them into place.
		n := len(body) - start
		one = appendTag(one[:0], 2, wireBytes)
		one = binary.AppendUvarint(one, uint64(n))
		body = append(body, one...)
		copy(body[start+len(one):], body[start:start+n])
		copy(body[start:], one)
	}
	service := []Attr{String("service.name", t.cfg.ServiceName)}
	resourceLen := 0
	for i := range service {
		resourceLen += stringFieldLen(keyValueLen(&service[i]))
	}
	scopeLen := stringFieldLen(len(scopeName))
	scopeSpansLen := stringFieldLen(scopeLen) + len(body)
	resourceSpansLen := stringFieldLen(resourceLen) + stringFieldLen(scopeSpansLen)

	b = appendTag(b, 1, wireBytes) // resource_spans
	b = binary.AppendUvarint(b, uint64(resourceSpansLen))
	b = appendTag(b, 1, wireBytes) // resource
	b = binary.AppendUvarint(b, uint64(resourceLen))
	b = appendKeyValues(b, 1, service)
	b = appendTag(b, 2, wireBytes) // scope_spans
	b = binary.AppendUvarint(b, uint64(scopeSpansLen))
	b = appendTag(b, 1, wireBytes) // scope
	b = binary.AppendUvarint(b, uint64(scopeLen))
	b = appendStringField(b, 1, scopeName)
	b = append(b, body...)
	return b, body
}
