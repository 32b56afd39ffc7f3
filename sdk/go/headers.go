package nimbus

import (
	"encoding/binary"
	"errors"
	"net/http"
)

// The header list encoding of ABI v1: a little-endian u32 entry count, then
// per entry a u32 name length, a u32 value length, the name bytes and the value
// bytes. A header with several values is several entries with the same name.

var errHeaderList = errors.New("nimbus: malformed header list")

// appendHeaderList appends the encoding of h to dst.
func appendHeaderList(dst []byte, h http.Header) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	var n uint32
	for name, values := range h {
		for _, v := range values {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(name)))
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, name...)
			dst = append(dst, v...)
			n++
		}
	}
	binary.LittleEndian.PutUint32(dst[start:], n)
	return dst
}

// parseHeaderList decodes an encoded header list into h. All names and values
// share one string allocation.
func parseHeaderList(b []byte, h http.Header) error {
	if len(b) < 4 {
		return errHeaderList
	}
	count := binary.LittleEndian.Uint32(b)
	s := string(b[4:])
	for i := uint32(0); i < count; i++ {
		if len(s) < 8 {
			return errHeaderList
		}
		nl, vl := uint64(le32(s)), uint64(le32(s[4:]))
		s = s[8:]
		if nl+vl > uint64(len(s)) {
			return errHeaderList
		}
		name, value := s[:nl], s[nl:nl+vl]
		s = s[nl+vl:]
		name = http.CanonicalHeaderKey(name)
		h[name] = append(h[name], value)
	}
	if len(s) != 0 {
		return errHeaderList
	}
	return nil
}

func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
