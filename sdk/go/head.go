package nimbus

import "encoding/binary"

// head is a decoded request_head value (docs/ABI.md): the content length,
// the six request strings and the encoded header list. The byte slices alias
// the buffer it was decoded from.
type head struct {
	contentLength                                            int64
	method, path, query, authority, remoteAddr, invocationID []byte
	headers                                                  []byte
}

// parseHead decodes b; ok is false if b is malformed.
func parseHead(b []byte) (h head, ok bool) {
	if len(b) < 8 {
		return h, false
	}
	h.contentLength = int64(binary.LittleEndian.Uint64(b))
	b = b[8:]
	for _, f := range [...]*[]byte{&h.method, &h.path, &h.query, &h.authority, &h.remoteAddr, &h.invocationID} {
		if len(b) < 4 {
			return h, false
		}
		n := uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if n > uint64(len(b)) {
			return h, false
		}
		*f, b = b[:n:n], b[n:]
	}
	h.headers = b
	return h, true
}

// methodString returns b as a string, without allocating for the common methods.
func methodString(b []byte) string {
	switch string(b) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(b)
}

// cached returns b as a string, reusing *last when it is equal (no
// allocation) and remembering it otherwise.
func cached(b []byte, last *string) string {
	if string(b) != *last {
		*last = string(b)
	}
	return *last
}
