package async

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Target names the function an invocation is for.
type Target = invoke.Target

// Invoker runs invocations; *invoke.Invoker satisfies it.
type Invoker interface {
	Invoke(ctx context.Context, t invoke.Target, req *runtime.Request, w http.ResponseWriter) (*metering.Record, error)
	Resolve(t invoke.Target) (*registry.Version, error)
}

// TopicPublisher publishes a destination result to a topic; the triggers
// service satisfies it.
type TopicPublisher interface {
	PublishData(ctx context.Context, tenant, topic, eventType, source, id string, data []byte) error
}

// Envelope is the JSON body a function receives for a trigger event (see the
// package documentation).
type Envelope struct {
	Kind            string            `json:"kind"`
	ID              string            `json:"id"`
	Time            time.Time         `json:"time"`
	Attempt         int               `json:"attempt"`
	Source          string            `json:"source,omitempty"`
	Subject         string            `json:"subject,omitempty"`
	Type            string            `json:"type,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	Extensions      map[string]string `json:"extensions,omitempty"`
	Data            json.RawMessage   `json:"data,omitempty"`
	DataBase64      string            `json:"data_base64,omitempty"`
}

// SetData stores payload b in the envelope: JSON as is (when contentType is
// empty or a JSON type and b is valid JSON), other UTF-8 text as a JSON string,
// anything else in DataBase64.
func (e *Envelope) SetData(b []byte, contentType string) {
	e.Data, e.DataBase64 = nil, ""
	if len(b) == 0 {
		return
	}
	ct := strings.ToLower(contentType)
	if (ct == "" || strings.Contains(ct, "json")) && json.Valid(b) {
		e.Data = json.RawMessage(b)
		return
	}
	if utf8.Valid(b) {
		e.Data, _ = json.Marshal(string(b))
		return
	}
	e.DataBase64 = base64.StdEncoding.EncodeToString(b)
}

// Job is one async invocation as it is stored on the work queue and in dead
// letters: either an HTTP request (Method, Path, Header, Body) or an Event.
type Job struct {
	ID        string      `json:"id"`
	Tenant    string      `json:"tenant"`
	Function  string      `json:"function"`
	Qualifier string      `json:"qualifier,omitempty"`
	Trigger   string      `json:"trigger"`
	Method    string      `json:"method,omitempty"`
	Path      string      `json:"path,omitempty"`
	RawQuery  string      `json:"query,omitempty"`
	Header    http.Header `json:"header,omitempty"`
	Body      []byte      `json:"body,omitempty"`
	Event     *Envelope   `json:"event,omitempty"`
	Callback  string      `json:"callback,omitempty"`
	Enqueued  time.Time   `json:"enqueued"`
}

// Target is the job's target.
func (j *Job) Target() Target {
	return Target{Tenant: j.Tenant, Function: j.Function, Qualifier: j.Qualifier}
}

// States of an invocation.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
)

// Status is what GET /api/v1/invocations/{id} answers.
type Status struct {
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Function   string     `json:"function"`
	Version    int        `json:"version,omitempty"`
	Trigger    string     `json:"trigger"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	Error      string     `json:"error,omitempty"`
	StatusCode int        `json:"status_code,omitempty"`
	Result     *Body      `json:"result,omitempty"`
	Enqueued   time.Time  `json:"enqueued"`
	Started    *time.Time `json:"started,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	DurationMS float64    `json:"duration_ms,omitempty"`
	DeadLetter bool       `json:"dead_letter,omitempty"`
	Node       string     `json:"node,omitempty"`
}

// Body is a captured response body: text in Text, anything else in Base64.
type Body struct {
	ContentType string `json:"content_type,omitempty"`
	Text        string `json:"text,omitempty"`
	Base64      string `json:"base64,omitempty"`
	Size        int    `json:"size"`
	Truncated   bool   `json:"truncated,omitempty"`
}

func newBody(b []byte, contentType string, truncated bool) *Body {
	if len(b) == 0 && !truncated {
		return nil
	}
	out := &Body{ContentType: contentType, Size: len(b), Truncated: truncated}
	if utf8.Valid(b) {
		out.Text = string(b)
	} else {
		out.Base64 = base64.StdEncoding.EncodeToString(b)
	}
	return out
}

// DeadLetter is an event whose attempts ran out (or that was too old to run).
type DeadLetter struct {
	ID       string    `json:"id"`
	Tenant   string    `json:"tenant"`
	Function string    `json:"function"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	FailedAt time.Time `json:"failed_at"`
	Job      Job       `json:"event"`
	// Seq is the dead letter's sequence in the dead-letter stream.
	Seq uint64 `json:"seq"`
}

// Result is what destinations receive when an invocation finished.
type Result struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	Function   string    `json:"function"`
	Version    int       `json:"version,omitempty"`
	State      string    `json:"state"`
	Attempts   int       `json:"attempts"`
	Error      string    `json:"error,omitempty"`
	StatusCode int       `json:"status_code,omitempty"`
	Response   *Body     `json:"response,omitempty"`
	Event      *Envelope `json:"event,omitempty"`
	Time       time.Time `json:"time"`
}
