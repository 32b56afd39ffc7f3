package lambda

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxPayload is the largest event or response body the Runtime API carries
// (AWS's buffered-mode limit).
const maxPayload = 6 << 20

// Runtime API paths, relative to AWS_LAMBDA_RUNTIME_API.
const (
	pathNext      = "/2018-06-01/runtime/invocation/next"
	pathResponse  = "/2018-06-01/runtime/invocation/{id}/response"
	pathError     = "/2018-06-01/runtime/invocation/{id}/error"
	pathInitError = "/2018-06-01/runtime/init/error"
)

// Header names of the Runtime API.
const (
	hdrRequestID   = "Lambda-Runtime-Aws-Request-Id"
	hdrDeadline    = "Lambda-Runtime-Deadline-Ms"
	hdrFunctionARN = "Lambda-Runtime-Invoked-Function-Arn"
	hdrTraceID     = "Lambda-Runtime-Trace-Id"
	hdrErrorType   = "Lambda-Runtime-Function-Error-Type"
	hdrErrorBody   = "Lambda-Runtime-Function-Error-Body"
)

// invocation is one event handed to the bootstrap, waiting for its answer.
type invocation struct {
	id       string
	event    []byte
	deadline time.Time
	arn      string
	traceID  string
	// done receives exactly one result.
	done chan apiResult
}

// apiResult is what the bootstrap answered for one invocation.
type apiResult struct {
	body []byte
	// fnErr is set when the bootstrap reported an error (/error, or an error
	// trailer on /response).
	fnErr *errorDoc
	// protoErr is set when the bootstrap broke the protocol.
	protoErr string
}

// errorDoc is the JSON error document of /error and /init/error.
type errorDoc struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	StackTrace   []string `json:"stackTrace,omitempty"`
}

// apiServer serves the Runtime API for one instance on its own loopback port.
type apiServer struct {
	ln     net.Listener
	srv    *http.Server
	events chan *invocation
	// ready is closed on the first /next: the bootstrap finished its init.
	ready     chan struct{}
	readyOnce sync.Once
	// initErr receives the bootstrap's /init/error report.
	initErr chan errorDoc
	closed  chan struct{}
	// tag is the id of the invocation whose output the process is writing
	// now; logs are tagged with it.
	tag atomic.Pointer[string]

	mu      sync.Mutex
	current *invocation // handed to the bootstrap, not yet answered

	handlers  sync.WaitGroup
	serveDone chan struct{}
	closeOnce sync.Once
	log       *slog.Logger
}

func newAPIServer(log *slog.Logger) (*apiServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &apiServer{
		ln:        ln,
		events:    make(chan *invocation),
		ready:     make(chan struct{}),
		initErr:   make(chan errorDoc, 1),
		closed:    make(chan struct{}),
		serveDone: make(chan struct{}),
		log:       log,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathNext, s.next)
	mux.HandleFunc("POST "+pathResponse, s.response)
	mux.HandleFunc("POST "+pathError, s.invocationError)
	mux.HandleFunc("POST "+pathInitError, s.initError)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.handlers.Add(1)
			defer s.handlers.Done()
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// addr is the value of AWS_LAMBDA_RUNTIME_API.
func (s *apiServer) addr() string { return s.ln.Addr().String() }

// logTag returns the invocation id the process output belongs to.
func (s *apiServer) logTag() string {
	if p := s.tag.Load(); p != nil {
		return *p
	}
	return ""
}

// close stops serving and waits for the handlers and the server goroutine.
func (s *apiServer) close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		_ = s.srv.Close()
		<-s.serveDone
		s.handlers.Wait()
	})
}

func (s *apiServer) next(w http.ResponseWriter, r *http.Request) {
	s.readyOnce.Do(func() { close(s.ready) })
	// The tag keeps the last invocation's id until the next event is handed
	// out: output the process wrote before asking for the next event may
	// still be in the pipe, and one invocation runs at a time, so it belongs
	// to the invocation that just answered.
	s.mu.Lock()
	if prev := s.current; prev != nil {
		// Asking for the next event abandons the one in hand.
		s.current = nil
		prev.done <- apiResult{protoErr: "the bootstrap asked for the next event without answering invocation " + prev.id}
	}
	s.mu.Unlock()

	var inv *invocation
	select {
	case inv = <-s.events:
	case <-s.closed:
		http.Error(w, "instance is shutting down", http.StatusGone)
		return
	case <-r.Context().Done():
		return
	}
	s.mu.Lock()
	s.current = inv
	s.mu.Unlock()
	id := inv.id
	s.tag.Store(&id)

	h := w.Header()
	h.Set(hdrRequestID, inv.id)
	h.Set(hdrDeadline, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set(hdrFunctionARN, inv.arn)
	h.Set(hdrTraceID, inv.traceID)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(inv.event)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.event)
}

// take claims the invocation id for an answer: 403 when no invocation is in
// hand (none yet, or already answered), 400 for another id than the one in
// hand. Ids may repeat (a retried event keeps its id), so only the one in
// hand counts.
func (s *apiServer) take(id string) (*invocation, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.current == nil:
		return nil, http.StatusForbidden
	case s.current.id != id:
		return nil, http.StatusBadRequest
	}
	inv := s.current
	s.current = nil
	return inv, 0
}

func (s *apiServer) response(w http.ResponseWriter, r *http.Request) {
	body, tooLarge, err := readBody(r)
	if err != nil {
		apiStatus(w, http.StatusBadRequest, "InvalidRequest", "reading the response body: "+err.Error())
		return
	}
	inv, status := s.take(r.PathValue("id"))
	if inv == nil {
		apiRefuse(w, status)
		return
	}
	switch {
	case tooLarge:
		inv.done <- apiResult{fnErr: &errorDoc{ErrorType: "Function.ResponseSizeTooLarge",
			ErrorMessage: "the function's response is larger than the 6 MiB limit"}}
		apiStatus(w, http.StatusRequestEntityTooLarge, "Function.ResponseSizeTooLarge", "response larger than 6 MiB")
		return
	case r.Trailer.Get(hdrErrorType) != "":
		// A response that failed midway reports its error in trailers.
		doc := errorDoc{ErrorType: r.Trailer.Get(hdrErrorType)}
		if b, err := base64.StdEncoding.DecodeString(r.Trailer.Get(hdrErrorBody)); err == nil {
			_ = json.Unmarshal(b, &doc)
			if doc.ErrorType == "" {
				doc.ErrorType = r.Trailer.Get(hdrErrorType)
			}
		}
		inv.done <- apiResult{fnErr: &doc}
	default:
		inv.done <- apiResult{body: body}
	}
	accepted(w)
}

func (s *apiServer) invocationError(w http.ResponseWriter, r *http.Request) {
	body, _, err := readBody(r)
	if err != nil {
		apiStatus(w, http.StatusBadRequest, "InvalidRequest", "reading the error body: "+err.Error())
		return
	}
	inv, status := s.take(r.PathValue("id"))
	if inv == nil {
		apiRefuse(w, status)
		return
	}
	doc := parseErrorDoc(r.Header, body)
	inv.done <- apiResult{fnErr: &doc}
	accepted(w)
}

func (s *apiServer) initError(w http.ResponseWriter, r *http.Request) {
	body, _, err := readBody(r)
	if err != nil {
		apiStatus(w, http.StatusBadRequest, "InvalidRequest", "reading the error body: "+err.Error())
		return
	}
	select {
	case <-s.ready:
		// Init is over once the bootstrap asked for an event.
		apiRefuse(w, http.StatusForbidden)
		return
	default:
	}
	select {
	case s.initErr <- parseErrorDoc(r.Header, body):
	default: // the first report wins
	}
	accepted(w)
}

// parseErrorDoc reads an error document; a body that is not one becomes the
// message, and the type header fills a missing type.
func parseErrorDoc(h http.Header, body []byte) errorDoc {
	var doc errorDoc
	if json.Unmarshal(body, &doc) != nil || (doc.ErrorMessage == "" && doc.ErrorType == "") {
		doc = errorDoc{ErrorMessage: string(body)}
	}
	if doc.ErrorType == "" {
		doc.ErrorType = h.Get(hdrErrorType)
	}
	if doc.ErrorType == "" {
		doc.ErrorType = "Unhandled"
	}
	return doc
}

// readBody reads a request body of at most maxPayload bytes, chunked or not;
// after it the trailers are in r.Trailer. tooLarge reports a longer body.
func readBody(r *http.Request) (body []byte, tooLarge bool, err error) {
	if r.ContentLength > maxPayload {
		return nil, true, nil
	}
	body, err = io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		return nil, false, err
	}
	if len(body) > maxPayload {
		return nil, true, nil
	}
	return body, false, nil
}

func accepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"status":"OK"}`)
}

func apiRefuse(w http.ResponseWriter, status int) {
	if status == http.StatusForbidden {
		apiStatus(w, status, "InvalidStateTransition", "no invocation is waiting for this answer")
		return
	}
	apiStatus(w, status, "InvalidRequestID", "unknown invocation id")
}

func apiStatus(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(errorDoc{ErrorType: typ, ErrorMessage: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var errClosed = errors.New("instance closed")
