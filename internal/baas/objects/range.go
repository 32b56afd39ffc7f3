package objects

import (
	"fmt"
	"strconv"
	"strings"
)

// Range is one HTTP byte range: bytes=a-b, bytes=a- or bytes=-n.
type Range struct {
	Start, End int64 // End -1: to the end
	Suffix     int64 // > 0: the last Suffix bytes
}

// ParseRange parses a Range header with a single byte range. An empty header
// gives nil. Malformed or multi-range headers are ErrInvalidArgument (S3
// ignores them; callers may choose to serve the whole object instead).
func ParseRange(h string) (*Range, error) {
	if h == "" {
		return nil, nil
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return nil, fmt.Errorf("%w: Range %q must be one range of the form bytes=a-b, bytes=a- or bytes=-n", ErrInvalidArgument, h)
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return nil, fmt.Errorf("%w: Range %q lacks a '-'", ErrInvalidArgument, h)
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: Range %q has a bad suffix length", ErrInvalidArgument, h)
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: Range %q asks for no bytes", ErrInvalidRange, h)
		}
		return &Range{Suffix: n, End: -1}, nil
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return nil, fmt.Errorf("%w: Range %q has a bad start", ErrInvalidArgument, h)
	}
	r := &Range{Start: start, End: -1}
	if b != "" {
		end, err := strconv.ParseInt(b, 10, 64)
		if err != nil || end < start {
			return nil, fmt.Errorf("%w: Range %q has a bad end", ErrInvalidArgument, h)
		}
		r.End = end
	}
	return r, nil
}

// Resolve gives the start and length of r in an object of size bytes, or
// ErrInvalidRange when r lies outside it.
func (r Range) Resolve(size int64) (start, length int64, err error) {
	if r.Suffix > 0 {
		if size == 0 {
			return 0, 0, fmt.Errorf("%w: the object is empty", ErrInvalidRange)
		}
		n := min(r.Suffix, size)
		return size - n, n, nil
	}
	if r.Start >= size {
		return 0, 0, fmt.Errorf("%w: the range starts at byte %d but the object has %d bytes", ErrInvalidRange, r.Start, size)
	}
	end := size - 1
	if r.End >= 0 && r.End < end {
		end = r.End
	}
	return r.Start, end - r.Start + 1, nil
}

// ContentRange is the Content-Range header value for a served range.
func ContentRange(start, length, size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size)
}
