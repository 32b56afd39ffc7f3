//go:build linux

package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// client is an HTTP/1.1 client for one instance's port, on pooled keep-alive
// connections. Unlike http.Transport it reads the response in the calling
// goroutine and, for a request without a body, writes it there too: no
// goroutine hand-offs on the warm path. A request body is written by a
// goroutine of its own while the response is read, so that both bodies
// stream at once (full duplex).
type client struct {
	addr    string
	maxIdle int
	dialer  net.Dialer

	mu     sync.Mutex
	idle   []*conn
	closed bool
}

// conn is one connection to the process.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	idle time.Time // when it went back to the pool
}

// checkAfter is how long a connection may idle before a bodiless request
// checks it for a close by the process: servers close idle connections after
// seconds, and such a request is sent again on a new connection anyway. A
// check is a system call (microseconds, a tenth of the hop here); a request
// with a body always checks, since it cannot be sent again.
const checkAfter = time.Second

const connBuf = 32 << 10

func newClient(addr string, maxIdle int) *client {
	return &client{addr: addr, maxIdle: maxIdle}
}

// get returns an idle connection that is still open, or dials a new one.
func (c *client) get(ctx context.Context, replayable bool) (cn *conn, reused bool, err error) {
	for {
		c.mu.Lock()
		if n := len(c.idle); n > 0 {
			cn = c.idle[n-1]
			c.idle = c.idle[:n-1]
		}
		c.mu.Unlock()
		if cn == nil {
			break
		}
		if replayable && time.Since(cn.idle) < checkAfter && cn.br.Buffered() == 0 || cn.idleOK() {
			return cn, true, nil
		}
		cn.nc.Close()
		cn = nil
	}
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, false, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, connBuf), bw: bufio.NewWriterSize(nc, connBuf)}, false, nil
}

// idleOK reports whether an idle connection may carry a request: the process
// has not closed it and sent nothing unasked (one non-blocking peek).
func (cn *conn) idleOK() bool {
	if cn.br.Buffered() > 0 {
		return false
	}
	sc, ok := cn.nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	cerr := rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = n < 0 && (err == unix.EAGAIN || err == unix.EWOULDBLOCK)
		return true
	})
	return cerr == nil && alive
}

// put returns a connection whose exchange completed to the pool.
func (c *client) put(cn *conn) {
	cn.idle = time.Now()
	c.mu.Lock()
	if !c.closed && len(c.idle) < c.maxIdle {
		c.idle = append(c.idle, cn)
		cn = nil
	}
	c.mu.Unlock()
	if cn != nil {
		cn.nc.Close()
	}
}

// closeIdle closes the idle connections; with final, later ones too.
func (c *client) closeIdle(final bool) {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.closed = c.closed || final
	c.mu.Unlock()
	for _, cn := range idle {
		cn.nc.Close()
	}
}

// exchange is one request in flight on a connection.
type exchange struct {
	c    *client
	cn   *conn
	stop func() bool // ends the context watch
	// wrote receives the body writer's result; nil without a body.
	wrote chan error
	body  *eofReader
}

// eofReader notes that the request body was read to its end (EOF, or all
// of a declared length).
type eofReader struct {
	r    io.ReadCloser
	left int64 // bytes to the declared length; < 0: unknown
	eof  atomic.Bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if e.left >= 0 {
		e.left -= int64(n)
	}
	if err == io.EOF || e.left == 0 {
		e.eof.Store(true)
	}
	return n, err
}

func (e *eofReader) Close() error { return e.r.Close() }

// flushWait bounds the wait for the rest of a fully read request body to
// reach the process before its connection is reused.
const flushWait = 50 * time.Millisecond

// errStale marks a failure on a reused connection before the process
// answered anything: the request may be sent again on a new connection.
var errStale = errors.New("stale connection")

// roundTrip sends req (whose Body it takes over) and reads the response
// head. The caller reads the body, then calls done, or fail if that broke.
// ctx ends the exchange: reads and writes fail at once.
func (c *client) roundTrip(ctx context.Context, req *http.Request) (*http.Response, *exchange, error) {
	for attempt := 0; ; attempt++ {
		resp, ex, err := c.try(ctx, req, attempt == 0)
		if errors.Is(err, errStale) {
			continue
		}
		return resp, ex, err
	}
}

func (c *client) try(ctx context.Context, req *http.Request, mayRetry bool) (*http.Response, *exchange, error) {
	noBody := req.Body == nil || req.Body == http.NoBody
	cn, reused, err := c.get(ctx, noBody && mayRetry)
	if err != nil {
		return nil, nil, err
	}
	ex := &exchange{c: c, cn: cn}
	ex.stop = context.AfterFunc(ctx, func() { cn.nc.SetDeadline(time.Unix(1, 0)) })
	if !noBody {
		ex.body = &eofReader{r: req.Body, left: req.ContentLength}
		if req.ContentLength <= 0 {
			ex.body.left = -1
		}
		req.Body = ex.body
	}
	if noBody {
		err = req.Write(cn.bw)
		if err == nil {
			err = cn.bw.Flush()
		}
	} else {
		ex.wrote = make(chan error, 1)
		go func() {
			err := req.Write(cn.bw)
			if err == nil {
				err = cn.bw.Flush()
			}
			ex.wrote <- err
		}()
	}
	if err == nil {
		var resp *http.Response
		for {
			resp, err = http.ReadResponse(cn.br, req)
			// Informational answers (103 Early Hints) precede the real one.
			if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		if err == nil {
			return resp, ex, nil
		}
	}
	stale := reused && noBody && mayRetry && ctx.Err() == nil && cn.br.Buffered() == 0
	ex.fail()
	if stale {
		return nil, nil, errStale
	}
	return nil, nil, err
}

// done ends an exchange whose response body was read to its end: the
// connection goes back to the pool when the request was fully written and
// both sides keep it open.
func (ex *exchange) done(resp *http.Response) {
	if !ex.stop() {
		ex.fail() // the context ended: the connection has a past deadline
		return
	}
	reuse := !resp.Close && !resp.Request.Close
	if ex.wrote != nil && reuse {
		select {
		case err := <-ex.wrote:
			reuse = err == nil
		default:
			// The writer is still at it: either the last bytes are on their
			// way, or the process answered before the caller sent the whole
			// body (then the writer may wait on the caller forever).
			reuse = false
			if ex.body.eof.Load() {
				t := time.NewTimer(flushWait)
				select {
				case err := <-ex.wrote:
					reuse = err == nil
				case <-t.C:
				}
				t.Stop()
			}
		}
	}
	if !reuse {
		ex.cn.nc.Close()
		return
	}
	ex.c.put(ex.cn)
}

// fail ends an exchange that broke; the connection is closed (which also
// ends a body writer blocked on it).
func (ex *exchange) fail() {
	ex.stop()
	ex.cn.nc.Close()
}
