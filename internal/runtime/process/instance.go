//go:build linux

package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/hostapi"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
)

// Instance is one running process serving HTTP on its own loopback port.
type Instance struct {
	t      *Template
	proc   *sandbox.Process
	logs   *logs
	addr   string // host:port
	base   string // "http://host:port"
	client *client
	hostEP *hostapi.Endpoint // the instance's host API endpoint, or nil

	closeOnce sync.Once
	closeErr  error
}

var _ runtime.Instance = (*Instance)(nil)

// NewInstance starts the process and waits until it answers HTTP on $PORT.
// The template's spare, when it has one, is let go instead of starting a
// process, and a successful start makes the next spare (see spare.go).
func (t *Template) NewInstance(ctx context.Context) (inst runtime.Instance, err error) {
	defer func() {
		if err == nil {
			t.spares.RefillLater() // a function that fails to start gets no spare
		}
	}()
	in, ok := t.takeSpare(ctx)
	if !ok {
		if in, err = t.launch(ctx, false); err != nil {
			return nil, err
		}
	}
	if err := in.waitReady(ctx); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// launch starts an instance's process on a free loopback port (its host
// API endpoint too, when offered); held leaves the process stopped before
// its first instruction.
func (t *Template) launch(ctx context.Context, held bool) (*Instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.StartFailed, Message: "process: no free loopback port", Err: err}
	}
	lg, wout, werr, err := newLogs(t.spec.Logs)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.StartFailed, Message: "process: make output pipes", Err: err}
	}
	env := append(append(make([]string, 0, len(t.env)+3), t.env...), "PORT="+strconv.Itoa(port))
	// The host API, when offered, is a local endpoint of this instance alone.
	var hostEP *hostapi.Endpoint
	if h, ok := t.spec.Host.(*hostapi.Host); ok && h != nil {
		if hostEP, err = hostapi.Listen(h); err != nil {
			lg.closeReaders()
			return nil, &runtime.Error{Kind: runtime.StartFailed, Message: "process: host API endpoint", Err: err}
		}
		env = append(env, hostEP.Env()...)
	}
	proc, err := sandbox.Start(ctx, sandbox.Config{
		Args:     t.args,
		Dir:      t.dir,
		Env:      env,
		MemoryMB: t.spec.MemoryMB,
		Pids:     t.rt.cfg.Pids,
		Stdout:   wout,
		Stderr:   werr,
		Held:     held,
	})
	wout.Close()
	werr.Close()
	if err != nil {
		lg.closeReaders()
		if hostEP != nil {
			_ = hostEP.Close()
		}
		return nil, &runtime.Error{Kind: runtime.StartFailed, Message: fmt.Sprintf("process: start %q", strings.Join(t.args, " ")), Err: err}
	}
	lg.start()
	conc := max(t.spec.Concurrency, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	in := &Instance{
		t:      t,
		proc:   proc,
		logs:   lg,
		hostEP: hostEP,
		addr:   addr,
		base:   "http://" + addr,
		client: newClient(addr, conc+4),
	}
	return in, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls until the process answers any HTTP request on its port,
// exits, or runs out of start time. Polls back off from 100µs to 1ms for the
// first second (a refused connection costs microseconds), then to 20ms.
func (in *Instance) waitReady(ctx context.Context) error {
	limit := in.t.startTimeout
	deadline := time.Now().Add(limit)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	wait := 100 * time.Microsecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if in.probe(ctx) {
			return nil
		}
		select {
		case <-in.proc.Done():
			return in.startExited()
		default:
		}
		timer.Reset(wait)
		select {
		case <-in.proc.Done():
			return in.startExited()
		case <-ctx.Done():
			if time.Now().Before(deadline) {
				return &runtime.Error{Kind: runtime.StartFailed, Message: "process: start canceled", Err: context.Cause(ctx)}
			}
			msg := fmt.Sprintf("process: did not listen on $PORT (%s) within %v: the server must listen on 127.0.0.1 or 0.0.0.0 at the port in $PORT", in.addr[strings.LastIndexByte(in.addr, ':')+1:], limit)
			if tail := in.logs.stderrTail(); tail != "" {
				msg += "; last stderr: " + tail
			}
			return runtime.Errorf(runtime.StartFailed, "%s", msg)
		case <-timer.C:
		}
		ceiling := time.Millisecond
		if time.Until(deadline) < limit-time.Second {
			ceiling = 20 * time.Millisecond
		}
		wait = min(wait*3/2, ceiling)
	}
}

// probe reports whether the port accepts a connection and answers HTTP. The
// connection stays open for the first invocation.
func (in *Instance) probe(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, in.base+"/", nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "nimbus-readiness")
	resp, ex, err := in.client.roundTrip(ctx, req)
	if err != nil {
		return false
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		ex.fail()
	} else {
		ex.done(resp)
	}
	return true
}

func (in *Instance) startExited() error {
	in.drainLogs()
	msg := fmt.Sprintf("process: exited at start (%v) before listening on $PORT", in.proc.ExitErr())
	if tail := in.logs.stderrTail(); tail != "" {
		msg += "; last stderr: " + tail
	}
	kind := runtime.StartFailed
	if in.proc.OutOfMemory() {
		kind = runtime.OutOfMemory
	}
	return &runtime.Error{Kind: kind, Message: msg}
}

// drainLogs waits (briefly) for the output readers to reach end of file, so
// that the last lines of a dead process are in the tail.
func (in *Instance) drainLogs() {
	done := make(chan struct{})
	go func() { in.logs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k], vv...)
	}
	for _, f := range src.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			if k = strings.TrimSpace(k); k != "" {
				dst.Del(k)
			}
		}
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// copyRequestHeader is copyHeader for the request to the process, less
// Expect: the server in front already answered any 100-continue.
func copyRequestHeader(dst, src http.Header) {
	copyHeader(dst, src)
	dst.Del("Expect")
}

// Invoke proxies one request to the process, streaming both bodies.
func (in *Instance) Invoke(ctx context.Context, req *runtime.Request, w http.ResponseWriter) error {
	select {
	case <-in.proc.Done():
		return in.crashed(nil)
	default:
	}
	url := in.base + req.Path
	if req.Path == "" {
		url = in.base + "/"
	}
	if req.RawQuery != "" {
		url += "?" + req.RawQuery
	}
	body := req.Body
	if body == nil || req.ContentLength == 0 {
		body = http.NoBody
	}
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	out, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return runtime.Errorf(runtime.BadResponse, "process: cannot build the request to the process: %v", err)
	}
	out.ContentLength = req.ContentLength
	if body == http.NoBody {
		out.ContentLength = 0
	}
	if req.Header != nil {
		copyRequestHeader(out.Header, req.Header)
	}
	out.Host = req.Host
	if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		if prior := out.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if out.Header.Get("X-Forwarded-Proto") == "" {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	if req.Host != "" && out.Header.Get("X-Forwarded-Host") == "" {
		out.Header.Set("X-Forwarded-Host", req.Host)
	}
	if req.ScriptName != "" {
		out.Header.Set("X-Forwarded-Prefix", req.ScriptName)
	}
	out.Header.Set("X-Nimbus-Invocation-Id", req.InvocationID)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // do not add Go's default
	}

	// Let the caller's request body keep streaming while we answer (HTTP/1
	// servers otherwise stop reading it once the response starts).
	_ = http.NewResponseController(w).EnableFullDuplex()

	in.logs.begin(req.InvocationID)
	defer in.logs.end(req.InvocationID)

	resp, ex, err := in.client.roundTrip(ctx, out)
	if err != nil {
		return in.failed(ctx, err)
	}
	h := w.Header()
	copyHeader(h, resp.Header)
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	if err := in.stream(w, resp.Body); err != nil {
		ex.fail()
		return in.failed(ctx, err)
	}
	ex.done(resp)
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errWrite marks a failure to write to the caller (who went away), as
// opposed to a failure to read from the process.
type errWrite struct{ error }

// stream copies the body, flushing whenever the process pauses (a read that
// does not fill the buffer), so that streamed responses reach the caller as
// they are written.
func (in *Instance) stream(w http.ResponseWriter, body io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errWrite{werr}
			}
			if n < len(buf) && err == nil {
				if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
					return errWrite{ferr}
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// failed classifies a proxy failure: deadline → TimedOut, OOM → OutOfMemory,
// process gone or connection broken → Crashed.
func (in *Instance) failed(ctx context.Context, err error) error {
	if in.proc.OutOfMemory() {
		return in.oom()
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			d := "its deadline"
			if in.t.spec.Timeout > 0 {
				d = "its timeout of " + in.t.spec.Timeout.String()
			}
			return &runtime.Error{Kind: runtime.TimedOut, Message: "process: the invocation passed " + d, Err: ctx.Err()}
		}
		return fmt.Errorf("process: invocation canceled: %w", context.Cause(ctx))
	}
	var we errWrite
	if errors.As(err, &we) {
		return fmt.Errorf("process: the caller went away: %w", we.error)
	}
	// A broken connection usually means the process died: give its exit a
	// moment to be seen so that the error says why.
	select {
	case <-in.proc.Done():
	case <-time.After(250 * time.Millisecond):
	}
	return in.crashed(err)
}

func (in *Instance) crashed(err error) error {
	select {
	case <-in.proc.Done():
		if in.proc.OutOfMemory() {
			return in.oom()
		}
		in.drainLogs()
		msg := fmt.Sprintf("process exited: %v", in.proc.ExitErr())
		if tail := in.logs.stderrTail(); tail != "" {
			msg += "; last stderr: " + tail
		}
		return &runtime.Error{Kind: runtime.Crashed, Message: msg}
	default:
	}
	if in.proc.OutOfMemory() {
		return in.oom()
	}
	return &runtime.Error{Kind: runtime.Crashed, Message: "process: connection to the process broke", Err: err}
}

func (in *Instance) oom() error {
	return runtime.Errorf(runtime.OutOfMemory, "process: killed: out of memory (limit %d MB)", in.t.spec.MemoryMB)
}

// Pid is the instance's main process id (for diagnostics and tests).
func (in *Instance) Pid() int { return in.proc.Pid() }

// Done is closed when the instance's main process has exited.
func (in *Instance) Done() <-chan struct{} { return in.proc.Done() }

// Close kills the instance's whole process tree and removes its cgroup and
// temp dir.
func (in *Instance) Close() error {
	in.closeOnce.Do(func() {
		in.closeErr = in.proc.Kill()
		in.client.closeIdle(true)
		in.drainLogs()
		in.logs.closeReaders()
		in.logs.wg.Wait()
		if in.hostEP != nil {
			_ = in.hostEP.Close()
		}
	})
	return in.closeErr
}
