//go:build wasip1

package nimbus

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"unsafe"
)

var handler http.Handler

// Handle registers h as the function's handler and returns. The host calls it
// once per request after main has returned.
func Handle(h http.Handler) {
	if h == nil {
		panic("nimbus: Handle called with a nil handler")
	}
	handler = h
}

// Error codes of ABI v1 (negative results of imports).
const (
	errInvalid  = -1
	errBounds   = -2
	errState    = -3
	errTooLarge = -4
	errIO       = -5
)

func abiError(op string, code int32) error {
	var what string
	switch code {
	case errInvalid:
		what = "invalid argument"
	case errBounds:
		what = "buffer outside memory"
	case errState:
		what = "not allowed now"
	case errTooLarge:
		what = "response too large"
	case errIO:
		what = "i/o error"
	default:
		what = "error " + strconv.Itoa(int(code))
	}
	return errors.New("nimbus: " + op + ": " + what)
}

// scratch is reused for every value read from the host.
var scratch = make([]byte, 4096)

// get reads one value through a getter import into scratch (growing it when
// the value does not fit) and returns the bytes, valid until the next get.
func get(f func(unsafe.Pointer, uint32) int32) []byte {
	for {
		n := f(unsafe.Pointer(unsafe.SliceData(scratch)), uint32(len(scratch)))
		if n < 0 {
			return nil
		}
		if int(n) <= len(scratch) {
			return scratch[:n]
		}
		scratch = make([]byte, n)
	}
}

// The host calls nimbus_handle one request at a time, so what a call needs
// beyond its Request is kept from one call to the next: a ResponseWriter and
// a request body may not be used after ServeHTTP returns, and strings equal
// to the previous request's (path, query, host, client address) are shared
// rather than allocated again. Every allocation is dear in a WebAssembly
// guest.
var (
	rw      responseWriter
	reqBody body
	prev    struct{ path, query, authority, remoteAddr, requestURI string }
)

// call is one request's Request and URL, in one allocation.
type call struct {
	r http.Request
	u url.URL
}

func serve() int32 {
	h := handler
	if h == nil {
		println("nimbus: no handler registered: main must call nimbus.Handle")
		return 1
	}
	hd, ok := parseHead(get(requestHead))
	if !ok {
		println("nimbus: reading the request: malformed request head")
		return 1
	}
	header := make(http.Header, headerCount(hd.headers)+1)
	spare, err := parseHeaderListSpare(hd.headers, header, 1)
	if err != nil {
		println("nimbus: reading request headers:", err.Error())
		return 1
	}
	if len(hd.invocationID) > 0 && header[InvocationIDHeader] == nil {
		header[InvocationIDHeader] = append(spare[:0], string(hd.invocationID))
	}
	c := &call{}
	path, query := prev.path, prev.query
	c.u.Path = cached(hd.path, &prev.path)
	c.u.RawQuery = cached(hd.query, &prev.query)
	if c.u.Path != path || c.u.RawQuery != query || prev.requestURI == "" {
		prev.requestURI = c.u.RequestURI()
	}
	c.r = http.Request{
		Method:        methodString(hd.method),
		URL:           &c.u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Host:          cached(hd.authority, &prev.authority),
		RemoteAddr:    cached(hd.remoteAddr, &prev.remoteAddr),
		ContentLength: hd.contentLength,
		RequestURI:    prev.requestURI,
	}
	r := &c.r
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	} else {
		reqBody = body{}
		r.Body = &reqBody
	}
	w := &rw
	if w.header == nil {
		w.header = make(http.Header)
	} else {
		clear(w.header)
	}
	w.wroteHeader, w.err = false, nil
	h.ServeHTTP(w, r)
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return 0
}

// body reads the request body from the host in chunks.
type body struct{ eof bool }

func (b *body) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > 1<<30 {
		p = p[:1<<30]
	}
	n := requestBodyRead(unsafe.Pointer(unsafe.SliceData(p)), uint32(len(p)))
	switch {
	case n > 0:
		return int(n), nil
	case n == 0:
		b.eof = true
		return 0, io.EOF
	default:
		return 0, abiError("reading request body", n)
	}
}

func (b *body) Close() error { return nil }

// headerBuf is reused to encode response headers.
var headerBuf []byte

type responseWriter struct {
	header      http.Header
	wroteHeader bool
	err         error
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	if status < 100 || status > 999 {
		panic("nimbus: invalid WriteHeader code " + strconv.Itoa(status))
	}
	w.wroteHeader = true
	if rc := responseSetStatus(int32(status)); rc < 0 {
		w.err = abiError("setting response status", rc)
		return
	}
	headerBuf = appendHeaderList(headerBuf[:0], w.header)
	if rc := responseSetHeaders(unsafe.Pointer(unsafe.SliceData(headerBuf)), uint32(len(headerBuf))); rc < 0 {
		w.err = abiError("setting response headers", rc)
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		if _, ok := w.header["Content-Type"]; !ok && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > 1<<30 {
			chunk = chunk[:1<<30]
		}
		rc := responseBodyWrite(unsafe.Pointer(unsafe.SliceData(chunk)), uint32(len(chunk)))
		if rc < 0 {
			w.err = abiError("writing response body", rc)
			return written, w.err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// WriteString lets io.WriteString skip a conversion.
func (w *responseWriter) WriteString(s string) (int, error) {
	return w.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Flush implements http.Flusher; the host sends the response when the handler
// returns, so there is nothing to do.
func (w *responseWriter) Flush() {}
