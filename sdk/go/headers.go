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
// share one string allocation, and the values of names seen once share one
// slice allocation.
func parseHeaderList(b []byte, h http.Header) error {
	_, err := parseHeaderListSpare(b, h, 0)
	return err
}

// parseHeaderListSpare is parseHeaderList that also returns spare empty
// value slots (length 0, capacity 1 each) from the same allocation.
func parseHeaderListSpare(b []byte, h http.Header, spare int) ([]string, error) {
	if len(b) < 4 {
		return nil, errHeaderList
	}
	count := binary.LittleEndian.Uint32(b)
	if uint64(count)*8 > uint64(len(b)-4) {
		return nil, errHeaderList
	}
	vals := make([]string, int(count)+spare)
	s := string(b[4:])
	for i := uint32(0); i < count; i++ {
		if len(s) < 8 {
			return nil, errHeaderList
		}
		nl, vl := uint64(le32(s)), uint64(le32(s[4:]))
		s = s[8:]
		if nl+vl > uint64(len(s)) {
			return nil, errHeaderList
		}
		name, value := s[:nl], s[nl:nl+vl]
		s = s[nl+vl:]
		name = http.CanonicalHeaderKey(name)
		if old, ok := h[name]; ok {
			h[name] = append(old, value)
			continue
		}
		vals[i] = value
		h[name] = vals[i : i+1 : i+1]
	}
	if len(s) != 0 {
		return nil, errHeaderList
	}
	return vals[count:], nil
}

// headerCount is the entry count of an encoded header list (0 if malformed).
func headerCount(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n)*8 > uint64(len(b)-4) {
		return 0
	}
	return int(n)
}

func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
