// Package runtime defines the contract between the invoker and the things that
// run function code: a Runtime prepares a version's code into a Template once
// (compile, cache, unpack), a Template starts Instances (a cold start), and an
// Instance serves invocations. The invoker and scaler know nothing else.
package runtime

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Runtime names, as users write them.
const (
	Wasm    = "wasm"
	WasmCGI = "wasm-cgi"
	Process = "process"
	Lambda  = "lambda"
	Python3 = "python3"
	NodeJS  = "nodejs"
)

// Runtime prepares code for one function version.
type Runtime interface {
	// Prepare validates and compiles code (the artifact's bytes) for spec. An error
	// caused by the code itself is an *Error of kind BadCode, whose message says what
	// to fix; the deploy that asked is refused with it.
	Prepare(ctx context.Context, spec *Spec, code []byte) (Template, error)
}

// Template is prepared code, ready to start instances.
type Template interface {
	// NewInstance starts one instance (a cold start). ctx bounds the start only.
	NewInstance(ctx context.Context) (Instance, error)
	// Close releases what Prepare built. Instances already started stay usable
	// until closed.
	Close() error
}

// Instance is one live, isolated copy of a version.
type Instance interface {
	// Invoke serves one invocation. ctx carries the deadline. The response goes
	// to w: a runtime that cannot stream (wasm) writes nothing to w unless the
	// invocation succeeds, so that the caller can still answer with an error.
	// Any returned error other than an *Error of kind FunctionError means the
	// instance must be discarded.
	Invoke(ctx context.Context, req *Request, w http.ResponseWriter) error
	// Close stops the instance and frees everything it holds.
	Close() error
}

// Spec is what a runtime needs to know about a function version.
type Spec struct {
	Tenant   string
	Function string
	Version  int
	Runtime  string
	// Digest is "sha256:<hex>" of the code; caches are keyed by it.
	Digest   string
	MemoryMB int
	Timeout  time.Duration
	Env      map[string]string
	// Concurrency is how many invocations one instance takes at once.
	Concurrency int
	// Entry is the command of a process bundle (e.g. "./server" or "python3 app.py").
	Entry string
	// Handler is the handler of a managed runtime (e.g. "handler.handler").
	Handler string
	// Snapshot, for wasm, serves fresh instances from a post-initialisation image.
	Snapshot bool
	// Logs receives every line the instances write.
	Logs LogSink
	// Host, when set, is the host API offered to the instances (kv, objects, …).
	Host any
}

// LogSink receives function output, one line at a time.
type LogSink interface {
	// Log records a line (without its newline) written by an instance on stream
	// "stdout" or "stderr". invocationID is empty for output outside an invocation.
	Log(invocationID, stream string, line []byte)
}

// Request is one invocation's input: an HTTP request, or an event (Raw).
type Request struct {
	InvocationID string
	Method       string
	// ScriptName is the path prefix that named the function ("/fn/hello").
	ScriptName string
	// Path is the sub-path after ScriptName, always beginning with "/".
	Path          string
	RawQuery      string
	Header        http.Header
	Host          string
	RemoteAddr    string
	Body          io.Reader
	ContentLength int64 // -1 when unknown
	// Raw marks an event payload (from a trigger) rather than an HTTP request:
	// runtimes with an event contract (lambda) pass Body through as the event.
	Raw bool
	// Trigger names what caused the invocation: "http", "async", "schedule", …
	Trigger string
	// Deadline is when the invocation must end (also on ctx).
	Deadline time.Time
}
