package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// cgiInstance serves wasm-cgi invocations: each Invoke instantiates a fresh
// module, runs its _start with the request in its environment and stdin, and
// parses its stdout as a CGI response.
type cgiInstance struct {
	t      *template
	out    cappedBuffer
	busy   atomic.Bool
	closed atomic.Bool
}

var _ runtime.Instance = (*cgiInstance)(nil)

func newCGIInstance(t *template) *cgiInstance {
	return &cgiInstance{t: t}
}

// cappedBuffer collects stdout up to a limit; past it, writes fail.
type cappedBuffer struct {
	buf  []byte
	max  int
	over bool
}

var errOutputTooLarge = errors.New("output over the response limit")

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if len(b.buf)+len(p) > b.max {
		b.over = true
		return 0, errOutputTooLarge
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Invoke runs the module once for req.
func (c *cgiInstance) Invoke(ctx context.Context, req *runtime.Request, w http.ResponseWriter) error {
	if c.closed.Load() {
		return &runtime.Error{Kind: runtime.Crashed, Message: "instance is closed", Err: errClosed}
	}
	if !c.busy.CompareAndSwap(false, true) {
		return &runtime.Error{Kind: runtime.Crashed, Message: "instance is already serving an invocation", Err: errors.New("wasm: concurrent Invoke")}
	}
	defer c.busy.Store(false)
	t := c.t
	if _, ok := ctx.Deadline(); !ok && t.spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.spec.Timeout)
		defer cancel()
	}
	body, length, err := cgiBody(req)
	if err != nil {
		return err
	}
	var sb sandbox
	src, _, cfg0 := t.current()
	sb.init(t, cfg0)
	sb.id = req.InvocationID
	sb.ctx = ctx
	c.out.buf = c.out.buf[:0]
	c.out.max = t.rt.cfg.MaxResponseBytes + maxCGIHeader
	c.out.over = false
	// _start is called after instantiation, with the deadline armed.
	cfg := sb.config(false).WithStdout(&c.out).WithStdin(body).WithStartFunctions()
	for _, kv := range cgiEnv(req, length) {
		cfg = cfg.WithEnv(kv[0], kv[1])
	}
	e, err := t.rt.mods.acquire(ctx, src)
	if err != nil {
		return &runtime.Error{Kind: runtime.StartFailed, Message: fmt.Sprintf("starting %s v%d: loading its module", t.spec.Function, t.spec.Version), Err: err}
	}
	mod, err := t.rt.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, &sb.mem), e.compiled, cfg)
	t.rt.mods.release(e)
	if err == nil {
		disarm := newInterrupter(mod).arm(ctx)
		_, err = mod.ExportedFunction("_start").Call(ctx)
		disarm()
		if exit := (*sys.ExitError)(nil); errors.As(err, &exit) && exit.ExitCode() == 0 {
			err = nil // proc_exit(0) ends a command normally
		}
	}
	sb.stderr.flush()
	if mod != nil {
		sb.mem.allowRecycle() // the call has returned
		_ = mod.Close(context.Background())
	}
	defer c.trim()
	if err != nil {
		var re *runtime.Error
		if errors.As(sb.classify(ctx, err, "function"), &re) && c.out.over && re.Kind == runtime.Crashed {
			return runtime.Errorf(runtime.BadResponse, "response is over the limit of %d bytes", t.rt.cfg.MaxResponseBytes)
		}
		return re
	}
	if c.out.over {
		return runtime.Errorf(runtime.BadResponse, "response is over the limit of %d bytes", t.rt.cfg.MaxResponseBytes)
	}
	resp, err := parseCGI(c.out.buf)
	if err != nil {
		return &runtime.Error{Kind: runtime.BadResponse, Message: err.Error()}
	}
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	writeBody(w, req.Method, resp.status, resp.body, nil)
	return nil
}

// trim drops a stdout buffer that a large response grew.
func (c *cgiInstance) trim() {
	if cap(c.out.buf) > 1<<20 {
		c.out.buf = nil
	}
}

// cgiBody returns the request body for stdin and its length. A body of
// unknown length is read in full first, because CGI needs CONTENT_LENGTH.
func cgiBody(req *runtime.Request) (io.Reader, int64, error) {
	if req.Body == nil || req.ContentLength == 0 {
		return bytes.NewReader(nil), 0, nil
	}
	if req.ContentLength > 0 {
		return io.LimitReader(req.Body, req.ContentLength), req.ContentLength, nil
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("wasm-cgi: reading request body: %w", err)
	}
	return bytes.NewReader(b), int64(len(b)), nil
}

// cgiEnv lists the request's CGI meta-variables (RFC 3875 §4.1). They are
// set after the function's own environment and take precedence over it.
func cgiEnv(req *runtime.Request, length int64) [][2]string {
	path := req.Path
	if path == "" {
		path = "/"
	}
	serverName, serverPort := req.Host, "80"
	if h, p, err := net.SplitHostPort(req.Host); err == nil {
		serverName, serverPort = h, p
	}
	remoteAddr, remotePort := req.RemoteAddr, ""
	if h, p, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		remoteAddr, remotePort = h, p
	}
	uri := req.ScriptName + path
	if req.RawQuery != "" {
		uri += "?" + req.RawQuery
	}
	env := [][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "Nimbus"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", serverName},
		{"SERVER_PORT", serverPort},
		{"REQUEST_METHOD", req.Method},
		{"SCRIPT_NAME", req.ScriptName},
		{"PATH_INFO", path},
		{"QUERY_STRING", req.RawQuery},
		{"REQUEST_URI", uri},
		{"REMOTE_ADDR", remoteAddr},
		{"REMOTE_PORT", remotePort},
		{"X_NIMBUS_INVOCATION_ID", req.InvocationID},
	}
	if length > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		env = append(env, [2]string{"CONTENT_LENGTH", strconv.FormatInt(length, 10)})
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		env = append(env, [2]string{"CONTENT_TYPE", ct})
	}
	names := make([]string, 0, len(req.Header))
	for k := range req.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		name := strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
		if name == "PROXY" { // httpoxy: never let a request set HTTP_PROXY
			continue
		}
		env = append(env, [2]string{"HTTP_" + name, strings.Join(req.Header[k], ", ")})
	}
	return env
}

// Close releases the instance's hold on its template.
func (c *cgiInstance) Close() error {
	if !c.closed.Swap(true) {
		c.t.release()
	}
	return nil
}
