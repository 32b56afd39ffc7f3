// Package apierr is the catalog of the error codes Nimbus answers with over
// HTTP. Every 4xx/5xx body is {"error":{"code":"…","message":"…"}}, so clients
// can match on code; the message says what to fix.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, documented error code and the HTTP status that goes with it.
type Code struct {
	Name   string
	Status int
}

// The catalog. Add codes here, never inline.
var (
	BadRequest       = Code{"bad_request", http.StatusBadRequest}
	InvalidName      = Code{"invalid_name", http.StatusBadRequest}
	InvalidRuntime   = Code{"invalid_runtime", http.StatusBadRequest}
	InvalidCode      = Code{"invalid_code", http.StatusBadRequest}
	InvalidConfig    = Code{"invalid_config", http.StatusBadRequest}
	Unauthorized     = Code{"unauthorized", http.StatusUnauthorized}
	Forbidden        = Code{"forbidden", http.StatusForbidden}
	NotFound         = Code{"not_found", http.StatusNotFound}
	FunctionNotFound = Code{"function_not_found", http.StatusNotFound}
	VersionNotFound  = Code{"version_not_found", http.StatusNotFound}
	MethodNotAllowed = Code{"method_not_allowed", http.StatusMethodNotAllowed}
	Conflict         = Code{"conflict", http.StatusConflict}
	PreconditionFail = Code{"precondition_failed", http.StatusPreconditionFailed}
	PayloadTooLarge  = Code{"payload_too_large", http.StatusRequestEntityTooLarge}
	HeadersTooLarge  = Code{"headers_too_large", http.StatusRequestHeaderFieldsTooLarge}
	TooManyRequests  = Code{"too_many_requests", http.StatusTooManyRequests}
	QuotaExceeded    = Code{"quota_exceeded", http.StatusTooManyRequests}
	FunctionCrashed  = Code{"function_crashed", http.StatusBadGateway}
	FunctionError    = Code{"function_error", http.StatusBadGateway}
	BadFunctionReply = Code{"bad_function_response", http.StatusBadGateway}
	OutOfMemory      = Code{"out_of_memory", http.StatusBadGateway}
	StartFailed      = Code{"start_failed", http.StatusBadGateway}
	Timeout          = Code{"timeout", http.StatusGatewayTimeout}
	Unavailable      = Code{"unavailable", http.StatusServiceUnavailable}
	Internal         = Code{"internal", http.StatusInternalServerError}
)

// RangeNotSatisfiable answers a byte range outside the object (objects API).
var RangeNotSatisfiable = Code{"range_not_satisfiable", http.StatusRequestedRangeNotSatisfiable}

// Quota codes for limits on what a tenant owns (internal/metering): 403,
// because retrying does not help until something is deleted or the quota raised.
var (
	QuotaFunctions = Code{"quota_functions", http.StatusForbidden}
	QuotaStorage   = Code{"quota_storage", http.StatusForbidden}
)

// Error is an API error: a catalog code and a message for the caller.
type Error struct {
	Code    Code
	Message string
	// Header is extra response headers (Retry-After, …).
	Header http.Header
}

func (e *Error) Error() string { return e.Code.Name + ": " + e.Message }

// New builds an *Error.
func New(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// As returns err as an *Error, mapping anything unclassified to Internal.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: Internal, Message: err.Error()}
}

type body struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Write answers with err as a JSON error document.
func Write(w http.ResponseWriter, err error) {
	e := As(err)
	for k, vs := range e.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	var b body
	b.Error.Code = e.Code.Name
	b.Error.Message = e.Message
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Code.Status)
	_ = json.NewEncoder(w).Encode(b)
}

// Decode reads an error document from an HTTP response body (for clients).
func Decode(data []byte) (code, message string, ok bool) {
	var b body
	if json.Unmarshal(data, &b) != nil || b.Error.Code == "" {
		return "", "", false
	}
	return b.Error.Code, b.Error.Message, true
}
