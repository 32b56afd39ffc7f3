package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/textproto"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// HostModule is the name of the import module that carries the Nimbus ABI.
const HostModule = "nimbus"

// ABIVersion is the version of the Nimbus ABI this runtime speaks. A module
// declares the version it was built for by exporting nimbus_abi_version_N.
const ABIVersion = 1

// Result codes of the ABI's imports (docs/ABI.md). Negative i32 results are
// errors; codes -6 … -8 are reserved for the host API.
const (
	errInvalid     int32 = -1 // an argument is invalid
	errBounds      int32 = -2 // a pointer/length pair lies outside guest memory
	errState       int32 = -3 // the call is not allowed now
	errTooLarge    int32 = -4 // the response is over the host's limit
	errIO          int32 = -5 // reading the request body failed
	errNotFound    int32 = -6 // reserved: host API, no such key/object/secret
	errDenied      int32 = -7 // reserved: host API, not allowed for this function
	errUnavailable int32 = -8 // reserved: host API, service not configured
)

var (
	_ = errNotFound
	_ = errDenied
	_ = errUnavailable
)

// exchange is the per-instance request/response state the host functions work
// on. Its buffers are reused from one invocation to the next.
type exchange struct {
	req       *reqView
	maxResp   int
	hdrBuf    []byte // encoded request headers
	hdrReady  bool
	headBuf   []byte // encoded request head (request_head)
	headReady bool
	bodyEOF   bool

	status      int
	respHdr     []byte // encoded response headers, as the guest sent them
	body        []byte
	bodyStarted bool
	tooLarge    bool

	host *hostState // the host API (hostapi.go)
}

// reqView is the request as the ABI presents it.
type reqView struct {
	method, path, query, authority, remoteAddr, invocationID string
	header                                                   map[string][]string
	body                                                     io.Reader
	contentLength                                            int64
}

func (x *exchange) reset(req *reqView) {
	x.req = req
	x.hdrReady = false
	x.headReady = false
	x.bodyEOF = false
	x.status = 200
	x.respHdr = x.respHdr[:0]
	x.body = x.body[:0]
	x.bodyStarted = false
	x.tooLarge = false
}

// release drops references to the finished request and trims buffers that a
// large response grew, so an idle instance holds little host memory.
func (x *exchange) release() {
	x.req = nil
	if cap(x.body) > 1<<20 {
		x.body = nil
	}
	if cap(x.hdrBuf) > 64<<10 {
		x.hdrBuf = nil
	}
	if cap(x.headBuf) > 64<<10 {
		x.headBuf = nil
	}
}

type ctxKey struct{}

// callCtx carries the instance's exchange to the host functions.
type callCtx struct {
	context.Context
	x *exchange
}

func (c *callCtx) Value(key any) any {
	if key == (ctxKey{}) {
		return c.x
	}
	return c.Context.Value(key)
}

// invokeCtx is the context of a warm call (reactor.Invoke), reused from one
// call to the next: the caller's context with the call's deadline. The
// interrupter enforces the deadline on the guest, so the context for the
// host functions that wait (a sleep, the host API) is made only when one
// asks for it.
type invokeCtx struct {
	parent   context.Context
	x        *exchange
	deadline time.Time // zero: none beyond the parent's

	mu      sync.Mutex
	derived context.Context // parent with the deadline, made on demand
	cancel  context.CancelFunc
}

// begin starts a call of x under parent until deadline.
func (c *invokeCtx) begin(parent context.Context, x *exchange, deadline time.Time) {
	c.parent, c.x, c.deadline = parent, x, deadline
}

// end releases what the call made. It reports whether c may serve the next
// call: not once a host function asked for Done, since whoever watches it
// (a goroutine context.WithCancel started, an HTTP request of the host API)
// may outlive the call and must keep seeing it ended, never the next one.
func (c *invokeCtx) end() (reusable bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.derived != nil {
		if c.cancel != nil {
			c.cancel()
		}
		c.x = nil
		return false
	}
	c.parent, c.x = nil, nil
	return true
}

func (c *invokeCtx) ctx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.derived == nil {
		if c.deadline.IsZero() {
			c.derived = c.parent
		} else {
			c.derived, c.cancel = context.WithDeadline(c.parent, c.deadline)
		}
	}
	return c.derived
}

func (c *invokeCtx) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() {
		return c.parent.Deadline()
	}
	return c.deadline, true
}

func (c *invokeCtx) Done() <-chan struct{} { return c.ctx().Done() }

func (c *invokeCtx) Err() error {
	c.mu.Lock()
	d := c.derived
	c.mu.Unlock()
	if d != nil {
		return d.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *invokeCtx) Value(key any) any {
	if key == (ctxKey{}) {
		return c.x
	}
	return c.parent.Value(key)
}

func exchangeOf(ctx context.Context) *exchange {
	switch c := ctx.(type) {
	case *invokeCtx:
		return c.x
	case *callCtx:
		return c.x
	}
	x, _ := ctx.Value(ctxKey{}).(*exchange)
	return x
}

func i32(stack []uint64, v int32) { stack[0] = api.EncodeI32(v) }

// getter returns a host function that copies one string of the request into
// guest memory: it returns the value's length, and copies it only if it fits.
func getter(field func(r *reqView) string) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		x := exchangeOf(ctx)
		if x == nil || x.req == nil {
			i32(stack, errState)
			return
		}
		putValue(mod, stack, field(x.req))
	}
}

func putValue(mod api.Module, stack []uint64, v string) {
	ptr, capacity := uint32(stack[0]), uint32(stack[1])
	if uint64(len(v)) > 1<<31-1 {
		i32(stack, errTooLarge)
		return
	}
	if uint32(len(v)) <= capacity && len(v) > 0 {
		if !mod.Memory().WriteString(ptr, v) {
			i32(stack, errBounds)
			return
		}
	}
	i32(stack, int32(len(v)))
}

func requestHeaders(ctx context.Context, mod api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		i32(stack, errState)
		return
	}
	if !x.hdrReady {
		x.hdrBuf = appendHeaderList(x.hdrBuf[:0], x.req.header)
		x.hdrReady = true
	}
	ptr, capacity := uint32(stack[0]), uint32(stack[1])
	if uint32(len(x.hdrBuf)) <= capacity {
		if !mod.Memory().Write(ptr, x.hdrBuf) {
			i32(stack, errBounds)
			return
		}
	}
	i32(stack, int32(len(x.hdrBuf)))
}

// requestHead copies the whole request head into guest memory in one call
// (docs/ABI.md, request_head): the content length, the six request strings
// and the header list.
func requestHead(ctx context.Context, mod api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		i32(stack, errState)
		return
	}
	if !x.headReady {
		x.headBuf = appendRequestHead(x.headBuf[:0], x.req)
		x.headReady = true
	}
	ptr, capacity := uint32(stack[0]), uint32(stack[1])
	if uint64(len(x.headBuf)) > 1<<31-1 {
		i32(stack, errTooLarge)
		return
	}
	if uint32(len(x.headBuf)) <= capacity {
		if !mod.Memory().Write(ptr, x.headBuf) {
			i32(stack, errBounds)
			return
		}
	}
	i32(stack, int32(len(x.headBuf)))
}

// appendRequestHead appends the request_head encoding of r to dst.
func appendRequestHead(dst []byte, r *reqView) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.contentLength))
	for _, v := range [...]string{r.method, r.path, r.query, r.authority, r.remoteAddr, r.invocationID} {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return appendHeaderList(dst, r.header)
}

func requestContentLength(ctx context.Context, _ api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		stack[0] = api.EncodeI64(int64(errState))
		return
	}
	stack[0] = api.EncodeI64(x.req.contentLength)
}

func requestBodyRead(ctx context.Context, mod api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		i32(stack, errState)
		return
	}
	ptr, capacity := uint32(stack[0]), uint32(stack[1])
	if capacity > 1<<30 {
		capacity = 1 << 30
	}
	if x.bodyEOF || x.req.body == nil || capacity == 0 {
		i32(stack, 0)
		return
	}
	view, ok := mod.Memory().Read(ptr, capacity)
	if !ok {
		i32(stack, errBounds)
		return
	}
	// Read straight into guest memory; retry reads that return nothing.
	for range 100 {
		n, err := x.req.body.Read(view)
		if n > 0 {
			if errors.Is(err, io.EOF) {
				x.bodyEOF = true
			}
			i32(stack, int32(n))
			return
		}
		if errors.Is(err, io.EOF) {
			x.bodyEOF = true
			i32(stack, 0)
			return
		}
		if err != nil {
			i32(stack, errIO)
			return
		}
	}
	i32(stack, errIO)
}

func responseSetStatus(ctx context.Context, _ api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil || x.bodyStarted {
		i32(stack, errState)
		return
	}
	status := api.DecodeI32(stack[0])
	if status < 100 || status > 999 {
		i32(stack, errInvalid)
		return
	}
	x.status = int(status)
	i32(stack, 0)
}

func responseSetHeaders(ctx context.Context, mod api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil || x.bodyStarted {
		i32(stack, errState)
		return
	}
	ptr, length := uint32(stack[0]), uint32(stack[1])
	if length > 1<<20 {
		i32(stack, errTooLarge)
		return
	}
	b, ok := mod.Memory().Read(ptr, length)
	if !ok {
		i32(stack, errBounds)
		return
	}
	if !validHeaderList(b) {
		i32(stack, errInvalid)
		return
	}
	x.respHdr = append(x.respHdr[:0], b...)
	i32(stack, 0)
}

func responseBodyWrite(ctx context.Context, mod api.Module, stack []uint64) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		i32(stack, errState)
		return
	}
	ptr, length := uint32(stack[0]), uint32(stack[1])
	if length > 1<<30 {
		i32(stack, errInvalid)
		return
	}
	b, ok := mod.Memory().Read(ptr, length)
	if !ok {
		i32(stack, errBounds)
		return
	}
	x.bodyStarted = true
	if len(x.body)+len(b) > x.maxResp {
		x.tooLarge = true
		i32(stack, errTooLarge)
		return
	}
	x.body = append(x.body, b...)
	i32(stack, int32(length))
}

// hostFunc describes one import of the nimbus module.
type hostFunc struct {
	name    string
	fn      api.GoModuleFunc
	params  []api.ValueType
	results []api.ValueType
}

var (
	i32T = api.ValueTypeI32
	i64T = api.ValueTypeI64
)

func hostFuncs() []hostFunc {
	get := func(name string, f func(*reqView) string) hostFunc {
		return hostFunc{name, getter(f), []api.ValueType{i32T, i32T}, []api.ValueType{i32T}}
	}
	return []hostFunc{
		get("request_method", func(r *reqView) string { return r.method }),
		get("request_path", func(r *reqView) string { return r.path }),
		get("request_query", func(r *reqView) string { return r.query }),
		get("request_authority", func(r *reqView) string { return r.authority }),
		get("request_remote_addr", func(r *reqView) string { return r.remoteAddr }),
		get("request_invocation_id", func(r *reqView) string { return r.invocationID }),
		{"request_headers", requestHeaders, []api.ValueType{i32T, i32T}, []api.ValueType{i32T}},
		{"request_head", requestHead, []api.ValueType{i32T, i32T}, []api.ValueType{i32T}},
		{"request_content_length", requestContentLength, nil, []api.ValueType{i64T}},
		{"request_body_read", requestBodyRead, []api.ValueType{i32T, i32T}, []api.ValueType{i32T}},
		{"response_set_status", responseSetStatus, []api.ValueType{i32T}, []api.ValueType{i32T}},
		{"response_set_headers", responseSetHeaders, []api.ValueType{i32T, i32T}, []api.ValueType{i32T}},
		{"response_body_write", responseBodyWrite, []api.ValueType{i32T, i32T}, []api.ValueType{i32T}},
	}
}

// instantiateHostModule adds the nimbus module to rt.
func instantiateHostModule(ctx context.Context, rt wazero.Runtime) (api.Module, error) {
	b := rt.NewHostModuleBuilder(HostModule)
	for _, f := range append(hostFuncs(), hostAPIFuncs()...) {
		b = b.NewFunctionBuilder().WithGoModuleFunction(f.fn, f.params, f.results).WithName(f.name).Export(f.name)
	}
	return b.Instantiate(ctx)
}

// appendHeaderList encodes h in the ABI's header list format: a u32 entry
// count, then per entry u32 name length, u32 value length, name, value (all
// integers little-endian). Names go out in canonical form and the entries of
// one name are adjacent, as docs/ABI.md section 3 promises guests: a map
// whose keys are not all canonical, which only a caller building one by
// hand makes, is merged into a canonical copy first.
func appendHeaderList(dst []byte, h map[string][]string) []byte {
	if out, ok := appendHeaders(dst, h, true); ok {
		return out
	}
	out, _ := appendHeaders(dst, canonicalHeader(h), false)
	return out
}

// appendHeaders encodes h; with check, it stops at the first name not in
// canonical form and reports false.
func appendHeaders(dst []byte, h map[string][]string, check bool) ([]byte, bool) {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	var n uint32
	for name, values := range h {
		if check && !canonicalName(name) {
			return dst[:start], false
		}
		for _, v := range values {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(name)))
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, name...)
			dst = append(dst, v...)
			n++
		}
	}
	binary.LittleEndian.PutUint32(dst[start:], n)
	return dst, true
}

// canonicalName reports whether name's letters are in canonical case: upper
// at the start and after a hyphen, lower elsewhere. It is a fast test of the
// form textproto.CanonicalMIMEHeaderKey gives a valid name (a map of
// net/http's passes it without a call of that per name on the invoke path);
// a name it refuses is canonicalised by the slow path.
func canonicalName(name string) bool {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// canonicalHeader is h with its names in canonical form, the values of
// names that differ only in case merged.
func canonicalHeader(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for name, values := range h {
		c := textproto.CanonicalMIMEHeaderKey(name)
		out[c] = append(out[c], values...)
	}
	return out
}

// validHeaderList reports whether b is a well-formed header list whose names
// are HTTP tokens and whose values hold no CR, LF or NUL.
func validHeaderList(b []byte) bool {
	ok := true
	n := walkHeaderList(b, func(name, value []byte) {
		for _, c := range name {
			if !isTokenChar(c) {
				ok = false
			}
		}
		for _, c := range value {
			if c == '\r' || c == '\n' || c == 0 {
				ok = false
			}
		}
	})
	return n >= 0 && ok
}

// isTokenChar reports whether c may appear in an HTTP field name (RFC 9110 token).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// walkHeaderList calls f for every entry of an encoded header list and
// returns the entry count, or -1 if the list is malformed.
func walkHeaderList(b []byte, f func(name, value []byte)) int {
	if len(b) < 4 {
		return -1
	}
	count := binary.LittleEndian.Uint32(b)
	b = b[4:]
	for i := uint32(0); i < count; i++ {
		if len(b) < 8 {
			return -1
		}
		nl, vl := uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[4:]))
		b = b[8:]
		if nl == 0 || nl+vl > uint64(len(b)) {
			return -1
		}
		f(b[:nl], b[nl:nl+vl])
		b = b[nl+vl:]
	}
	if len(b) != 0 {
		return -1
	}
	return int(count)
}
