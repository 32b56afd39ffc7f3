package hostapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

// The local HTTP endpoint of the host API, for process functions. Every
// request carries "Authorization: Bearer $NIMBUS_HOST_TOKEN"; the function's
// own request's X-Nimbus-Invocation-Id and Traceparent may be passed on so that
// log entries and outbound requests are tied to the invocation.
//
//	GET    /v1/kv/{bucket}?prefix=P          {"keys":[…]}
//	GET    /v1/kv/{bucket}/{key...}          the value (application/json)
//	PUT    /v1/kv/{bucket}/{key...}          store the body (a JSON document)
//	DELETE /v1/kv/{bucket}/{key...}
//	GET    /v1/objects/{bucket}?prefix=P     {"keys":[…]}
//	GET    /v1/objects/{bucket}/{key...}     the object, with its Content-Type
//	PUT    /v1/objects/{bucket}/{key...}     store the body (Content-Type kept)
//	DELETE /v1/objects/{bucket}/{key...}
//	POST   /v1/publish/{topic}               publish the body (Ce-Type header: the event type)
//	GET    /v1/secrets/{name}                the secret's value (text/plain)
//	GET    /v1/config/{name}                 the env value (text/plain)
//	POST   /v1/log                           {"level","msg","fields":{…}}
//	POST   /v1/fetch                         FetchRequest JSON → FetchResponse JSON
//
// Errors are {"error":{"code","message"}} with code not_found (404),
// forbidden (403), payload_too_large (413), bad_request (400), unavailable
// (503) or internal (500).

// Handler serves h's host API to a holder of token.
func Handler(h *Host, token string) http.Handler {
	mux := http.NewServeMux()
	s := &endpoint{h: h}
	mux.HandleFunc("GET /v1/kv/{bucket}", s.kvList)
	mux.HandleFunc("GET /v1/kv/{bucket}/{key...}", s.kvGet)
	mux.HandleFunc("PUT /v1/kv/{bucket}/{key...}", s.kvPut)
	mux.HandleFunc("DELETE /v1/kv/{bucket}/{key...}", s.kvDelete)
	mux.HandleFunc("GET /v1/objects/{bucket}", s.objList)
	mux.HandleFunc("GET /v1/objects/{bucket}/{key...}", s.objGet)
	mux.HandleFunc("PUT /v1/objects/{bucket}/{key...}", s.objPut)
	mux.HandleFunc("DELETE /v1/objects/{bucket}/{key...}", s.objDelete)
	mux.HandleFunc("POST /v1/publish/{topic}", s.publish)
	mux.HandleFunc("GET /v1/secrets/{name}", s.secret)
	mux.HandleFunc("GET /v1/config/{name}", s.config)
	mux.HandleFunc("POST /v1/log", s.log)
	mux.HandleFunc("POST /v1/fetch", s.fetch)
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			apierr.Write(w, apierr.New(apierr.Unauthorized, "the host API needs Authorization: Bearer $NIMBUS_HOST_TOKEN"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type endpoint struct{ h *Host }

func writeErr(w http.ResponseWriter, err error) {
	code := apierr.Internal
	switch KindOf(err) {
	case NotFound:
		code = apierr.NotFound
	case Denied:
		code = apierr.Forbidden
	case TooLarge:
		code = apierr.PayloadTooLarge
	case BadInput:
		code = apierr.BadRequest
	case Unavailable:
		code = apierr.Unavailable
	}
	apierr.Write(w, apierr.New(code, "%s", err.Error()))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// body reads a request body of at most max bytes.
func body(w http.ResponseWriter, r *http.Request, op string, max int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(TooLarge, op, "request body is over %d bytes", max)
		}
		return nil, &Error{Kind: BadInput, Op: op, Message: "reading the request body", Err: err}
	}
	return b, nil
}

func reqCtx(r *http.Request) context.Context {
	return WithTraceparent(r.Context(), r.Header.Get(telemetry.HeaderTraceparent))
}

func (s *endpoint) kvList(w http.ResponseWriter, r *http.Request) {
	keys, err := s.h.KVList(r.Context(), r.PathValue("bucket"), r.URL.Query().Get("prefix"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, map[string]any{"keys": keys})
}

func (s *endpoint) kvGet(w http.ResponseWriter, r *http.Request) {
	v, err := s.h.KVGet(r.Context(), r.PathValue("bucket"), r.PathValue("key"))
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(v)
}

func (s *endpoint) kvPut(w http.ResponseWriter, r *http.Request) {
	b, err := body(w, r, "kv_put", 64<<20)
	if err == nil {
		_, err = s.h.KVPut(r.Context(), r.PathValue("bucket"), r.PathValue("key"), b)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) kvDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.h.KVDelete(r.Context(), r.PathValue("bucket"), r.PathValue("key")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) objList(w http.ResponseWriter, r *http.Request) {
	keys, err := s.h.ObjectList(r.Context(), r.PathValue("bucket"), r.URL.Query().Get("prefix"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, map[string]any{"keys": keys})
}

func (s *endpoint) objGet(w http.ResponseWriter, r *http.Request) {
	o, err := s.h.ObjectGet(r.Context(), r.PathValue("bucket"), r.PathValue("key"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if o.ContentType != "" {
		w.Header().Set("Content-Type", o.ContentType)
	}
	_, _ = w.Write(o.Data)
}

func (s *endpoint) objPut(w http.ResponseWriter, r *http.Request) {
	b, err := body(w, r, "object_put", s.h.f.s.Limits.MaxObjectBytes)
	if err == nil {
		err = s.h.ObjectPut(r.Context(), r.PathValue("bucket"), r.PathValue("key"), b, r.Header.Get("Content-Type"))
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) objDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.h.ObjectDelete(r.Context(), r.PathValue("bucket"), r.PathValue("key")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) publish(w http.ResponseWriter, r *http.Request) {
	b, err := body(w, r, "publish", 1<<20)
	if err == nil {
		err = s.h.Publish(r.Context(), r.PathValue("topic"), b, r.Header.Get("Ce-Type"))
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) secret(w http.ResponseWriter, r *http.Request) {
	v, err := s.h.Secret(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, v)
}

func (s *endpoint) config(w http.ResponseWriter, r *http.Request) {
	v, err := s.h.Config(r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, v)
}

type logRequest struct {
	Level  string            `json:"level"`
	Msg    string            `json:"msg"`
	Fields map[string]string `json:"fields"`
}

func (s *endpoint) log(w http.ResponseWriter, r *http.Request) {
	b, err := body(w, r, "log_write", 4*MaxLogBytes)
	var lr logRequest
	if err == nil {
		if jerr := json.Unmarshal(b, &lr); jerr != nil {
			err = &Error{Kind: BadInput, Op: "log_write", Message: "body must be {\"level\",\"msg\",\"fields\"}", Err: jerr}
		}
	}
	if err == nil {
		err = s.h.Log(r.Header.Get("X-Nimbus-Invocation-Id"), lr.Level, lr.Msg, lr.Fields)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *endpoint) fetch(w http.ResponseWriter, r *http.Request) {
	b, err := body(w, r, "http_request", s.h.f.s.Limits.MaxFetchRequestBytes*2+64<<10)
	var fr FetchRequest
	if err == nil {
		if jerr := json.Unmarshal(b, &fr); jerr != nil {
			err = &Error{Kind: BadInput, Op: "http_request", Message: "body must be a JSON fetch request {\"method\",\"url\",\"header\",\"body\"}", Err: jerr}
		}
	}
	var resp *FetchResponse
	if err == nil {
		resp, err = s.h.Fetch(reqCtx(r), fr)
	}
	if err != nil {
		s.h.Report(r.Header.Get("X-Nimbus-Invocation-Id"), err)
		writeErr(w, err)
		return
	}
	writeJSON(w, resp)
}

// Endpoint is a running local host-API endpoint for one process instance.
type Endpoint struct {
	URL   string // "http://127.0.0.1:PORT"
	Token string
	srv   *http.Server
	ln    net.Listener
	wg    sync.WaitGroup
}

// Listen starts a host-API endpoint for h on a free loopback port with a
// fresh random token. Close stops it.
func Listen(h *Host) (*Endpoint, error) {
	var tok [24]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, fmt.Errorf("hostapi: token for %s: %w", h.function, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("hostapi: endpoint for %s: %w", h.function, err)
	}
	e := &Endpoint{URL: "http://" + ln.Addr().String(), Token: hex.EncodeToString(tok[:]), ln: ln}
	e.srv = &http.Server{Handler: Handler(h, e.Token), ReadHeaderTimeout: 10 * time.Second}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = e.srv.Serve(ln)
	}()
	return e, nil
}

// Env is the environment a process gets to reach the endpoint.
func (e *Endpoint) Env() []string {
	return []string{"NIMBUS_HOST_API=" + e.URL, "NIMBUS_HOST_TOKEN=" + e.Token}
}

// Close stops the endpoint, ending calls in flight, and waits for it.
func (e *Endpoint) Close() error {
	err := e.srv.Close()
	e.wg.Wait()
	return err
}
