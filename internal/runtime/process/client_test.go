//go:build linux

package process

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testClient serves h and returns a client for it and a count of the
// connections the server accepted.
func testClient(t *testing.T, h http.HandlerFunc) (*client, *httptest.Server, *atomic.Int32) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(srv.Listener.Addr().String(), 4)
	t.Cleanup(func() { c.closeIdle(true) })
	return c, srv, &conns
}

func do(t *testing.T, c *client, ctx context.Context, method string, body io.Reader) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+c.addr+"/", body)
	if body == nil {
		req.Body = http.NoBody
	}
	resp, ex, err := c.roundTrip(ctx, req)
	if err != nil {
		return 0, "", err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ex.fail()
		return 0, "", err
	}
	ex.done(resp)
	return resp.StatusCode, string(b), nil
}

func TestClientReusesConnections(t *testing.T) {
	c, _, conns := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+string(b))
	})
	for i := range 5 {
		var body io.Reader
		if i%2 == 1 {
			body = strings.NewReader("x")
		}
		if _, got, err := do(t, c, context.Background(), "POST", body); err != nil || !strings.HasPrefix(got, "POST") {
			t.Fatalf("call %d: %q %v", i, got, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential calls, want 1", n)
	}
}

// The process may close an idle connection at any time: the next call,
// with or without a body, goes out on a new one.
func TestClientIdleConnectionClosedByProcess(t *testing.T) {
	c, srv, conns := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	for i, body := range []string{"", "with body"} {
		if _, _, err := do(t, c, context.Background(), "GET", nil); err != nil {
			t.Fatal(err)
		}
		srv.CloseClientConnections()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		if _, got, err := do(t, c, context.Background(), "POST", r); err != nil || got != body {
			t.Fatalf("after the close: %q %v", got, err)
		}
		if n := conns.Load(); n != int32(i+2) {
			t.Fatalf("%d connections, want %d", n, i+2)
		}
	}
}

// A connection is not reused after Connection: close, nor after an answer
// that left the request body unread.
func TestClientDropsUnreusableConnections(t *testing.T) {
	c, _, conns := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close")
		}
		w.WriteHeader(http.StatusRequestEntityTooLarge) // body left unread
	})
	big := strings.NewReader(strings.Repeat("x", 8<<20))
	if code, _, err := do(t, c, context.Background(), "POST", big); err != nil || code != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d %v", code, err)
	}
	if code, _, err := do(t, c, context.Background(), "GET", nil); err != nil || code != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d %v", code, err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle connections, want 1", idle)
	}
}

func TestClientContextEndsExchange(t *testing.T) {
	release := make(chan struct{})
	c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := do(t, c, ctx, "GET", nil)
	if !isTimeout(err) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	if idle != 0 {
		t.Fatalf("%d idle connections after a broken exchange", idle)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
