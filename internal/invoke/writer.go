package invoke

import (
	"errors"
	"net/http"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

// statusWriter remembers the status a function answered with; a non-zero
// status means the response has started (the gateway reads it from the record).
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader passes the first status on and ignores later ones, so callers
// can tell from status whether the response has started.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes flushes through for streaming runtimes.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// HTTPError maps an invocation error onto the API error catalog.
func HTTPError(function string, err error) *apierr.Error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae
	}
	var re *runtime.Error
	if !errors.As(err, &re) {
		return apierr.New(apierr.Internal, "invoking %q: %v", function, err)
	}
	switch re.Kind {
	case runtime.TimedOut:
		return apierr.New(apierr.Timeout, "function %q timed out: %v", function, re)
	case runtime.OutOfMemory:
		return apierr.New(apierr.OutOfMemory, "function %q ran out of memory: %v", function, re)
	case runtime.BadResponse:
		return apierr.New(apierr.BadFunctionReply, "function %q answered outside its contract: %v", function, re)
	case runtime.StartFailed, runtime.BadCode:
		return apierr.New(apierr.StartFailed, "function %q could not start: %v", function, re)
	case runtime.FunctionError:
		if re.Type != "" {
			return apierr.New(apierr.FunctionError, "function %q failed: %s: %s", function, re.Type, re.Message)
		}
		return apierr.New(apierr.FunctionError, "function %q failed: %s", function, re.Message)
	}
	return apierr.New(apierr.FunctionCrashed, "function %q crashed: %v", function, re)
}
