package async

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
)

type callback struct {
	url  string
	id   string
	body []byte
	st   string
}

// destinations delivers the result of a finished invocation to the version's
// on_success / on_failure destination and to the request's callback URL.
func (s *Service) destinations(ctx context.Context, j *Job, v *registry.Version, st *Status) {
	var dest string
	if v != nil {
		if st.State == StateSucceeded {
			dest = v.Config.Async.OnSuccess
		} else {
			dest = v.Config.Async.OnFailure
		}
	}
	if dest == "" && j.Callback == "" {
		return
	}
	res := Result{
		ID: j.ID, Tenant: j.Tenant, Function: j.Function, Version: st.Version, State: st.State,
		Attempts: st.Attempts, Error: st.Error, StatusCode: st.StatusCode, Response: st.Result,
		Event: j.Event, Time: time.Now().UTC(),
	}
	data, err := json.Marshal(res)
	if err != nil {
		return
	}
	if dest != "" {
		s.deliver(ctx, dest, j, st.State, data)
	}
	if j.Callback != "" {
		s.queueCallback(callback{url: j.Callback, id: j.ID, body: data, st: st.State})
	}
}

func (s *Service) deliver(ctx context.Context, dest string, j *Job, state string, data []byte) {
	ctx = context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	evType := "nimbus.async." + state
	source := "function:" + j.Function
	switch {
	case strings.HasPrefix(dest, "function:"):
		name := strings.TrimPrefix(dest, "function:")
		ev := Envelope{Kind: "destination", Source: source, Type: evType, Subject: j.ID, Data: data}
		_, err := s.EnqueueEvent(ctx, Target{Tenant: j.Tenant, Function: name}, ev, Options{MsgID: "dest." + j.ID + "." + state})
		if err != nil {
			s.log.Warn("async destination", "function", j.Function, "destination", dest, "err", err)
		}
	case strings.HasPrefix(dest, "topic:"):
		s.mu.Lock()
		p := s.topics
		s.mu.Unlock()
		if p == nil {
			s.log.Warn("async destination: topics are not available", "function", j.Function, "destination", dest)
			return
		}
		if err := p.PublishData(ctx, j.Tenant, strings.TrimPrefix(dest, "topic:"), evType, source, j.ID+"."+state, data); err != nil {
			s.log.Warn("async destination", "function", j.Function, "destination", dest, "err", err)
		}
	case strings.HasPrefix(dest, "http://") || strings.HasPrefix(dest, "https://"):
		s.queueCallback(callback{url: dest, id: j.ID, body: data, st: state})
	default:
		s.log.Warn("async destination not understood; use function:NAME, topic:NAME or an http(s) URL", "function", j.Function, "destination", dest)
	}
}

func (s *Service) queueCallback(c callback) {
	select {
	case s.callbacks <- c:
	default:
		s.log.Warn("callback queue full; result not sent", "id", c.id, "url", c.url)
	}
}

// errCallbackAddr refuses a callback to an address the server keeps to itself.
var errCallbackAddr = errors.New("callback address is loopback, link-local or unspecified; the server does not POST there (nimbus serve --callback-loopback allows it)")

// newCallbackClient returns the client that POSTs results. Unless loopback
// is true, its dialer refuses loopback, link-local and unspecified addresses
// at connect time, so neither a redirect nor a name that resolves to one
// (DNS rebinding) gets around the check.
func newCallbackClient(loopback bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !loopback {
		d.Control = func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return err
			}
			if !callbackAddrAllowed(ip) {
				return errCallbackAddr
			}
			return nil
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	tr.Proxy = nil
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// callbackAddrAllowed reports whether a callback may connect to ip.
func callbackAddrAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() &&
		!ip.IsUnspecified() && !ip.IsInterfaceLocalMulticast()
}

func (s *Service) callbackLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case c := <-s.callbacks:
			s.sendCallback(c)
		}
	}
}

// sendCallback POSTs a result, up to 3 tries.
func (s *Service) sendCallback(c callback) {
	wait := 200 * time.Millisecond
	for try := 1; try <= 3; try++ {
		req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
		if err != nil {
			s.log.Warn("callback URL", "id", c.id, "url", c.url, "err", err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Nimbus-Invocation-Id", c.id)
		req.Header.Set("X-Nimbus-Status", c.st)
		resp, err := s.cbClient.Do(req)
		if errors.Is(err, errCallbackAddr) {
			s.log.Warn("callback refused", "id", c.id, "url", c.url, "err", err)
			return
		}
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 4
	}
	s.log.Warn("callback failed after 3 tries", "id", c.id, "url", c.url)
}
