package runtime

import (
	"errors"
	"fmt"
)

// Kind classifies why an invocation or a preparation failed.
type Kind int

const (
	// Crashed: the instance trapped, panicked, exited or broke the protocol.
	Crashed Kind = iota + 1
	// TimedOut: the invocation passed its deadline.
	TimedOut
	// OutOfMemory: the instance went past its memory cap.
	OutOfMemory
	// BadResponse: the function answered, but not in its runtime's contract
	// (a malformed CGI header, say).
	BadResponse
	// StartFailed: an instance could not be started.
	StartFailed
	// FunctionError: the function reported an error in its own protocol (a Lambda
	// handler returning an error). The instance stays healthy and is reused.
	FunctionError
	// BadCode: the code cannot be prepared (not wasm, missing imports, …).
	BadCode
)

func (k Kind) String() string {
	switch k {
	case Crashed:
		return "crashed"
	case TimedOut:
		return "timeout"
	case OutOfMemory:
		return "out_of_memory"
	case BadResponse:
		return "bad_response"
	case StartFailed:
		return "start_failed"
	case FunctionError:
		return "function_error"
	case BadCode:
		return "bad_code"
	}
	return "unknown"
}

// Error is a classified runtime failure. Message is for the function's author.
type Error struct {
	Kind    Kind
	Message string
	// Type is the function's own error type, for FunctionError (Lambda's errorType).
	Type string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return fmt.Sprintf("%s: %v", e.Kind, e.Err)
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error of kind k.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf reports the Kind of err, Crashed for an unclassified error, 0 for nil.
func KindOf(err error) Kind {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Crashed
}

// Reusable reports whether an instance that returned err may serve again.
func Reusable(err error) bool {
	return err == nil || KindOf(err) == FunctionError
}
