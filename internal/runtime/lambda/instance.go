package lambda

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// instance is one bootstrap process and its Runtime API server.
type instance struct {
	t      *template
	api    *apiServer
	p      proc
	stdout *lineWriter
	stderr *lineWriter
	// sem lets one invocation in at a time.
	sem       chan struct{}
	broken    atomic.Bool
	closeOnce sync.Once
}

var _ runtime.Instance = (*instance)(nil)

// NewInstance starts the bootstrap and waits until it asks for its first
// event. A bootstrap that exits, reports /init/error or does not ask in time
// fails with StartFailed, and nothing of it is left running. The template's
// spare, when it has one, is let go instead of starting a process, and a
// successful start makes the next spare (see spare.go).
func (t *template) NewInstance(ctx context.Context) (inst runtime.Instance, err error) {
	defer func() {
		if err == nil {
			t.spares.RefillLater() // a function that fails to start gets no spare
		}
	}()
	if in, ok := t.spares.Take(ctx); ok {
		if err := in.p.Run(); err == nil {
			return t.await(ctx, in)
		}
		_ = in.Close() // gone while held: start afresh
	}
	in, err := t.launch(ctx, false)
	if err != nil {
		return nil, err
	}
	return t.await(ctx, in)
}

// launch starts an instance's Runtime API server and process; held leaves
// the process stopped before its first instruction.
func (t *template) launch(ctx context.Context, held bool) (*instance, error) {
	api, err := newAPIServer(t.rt.log)
	if err != nil {
		return nil, fmt.Errorf("function %s: runtime API listener: %w", t.spec.Function, err)
	}
	in := &instance{t: t, api: api, sem: make(chan struct{}, 1)}
	in.stdout = &lineWriter{stream: "stdout", sink: t.spec.Logs, tag: api.logTag}
	in.stderr = &lineWriter{stream: "stderr", sink: t.spec.Logs, tag: api.logTag}

	var idb [8]byte
	_, _ = rand.Read(idb[:])
	in.p, err = startProc(ctx, procConfig{
		Args:     t.args,
		Dir:      t.dir,
		Env:      t.env(api.addr(), hex.EncodeToString(idb[:])),
		MemoryMB: t.spec.MemoryMB,
		Pids:     t.rt.cfg.Pids,
		Stdout:   in.stdout,
		Stderr:   in.stderr,
		Held:     held,
	})
	if err != nil {
		api.close()
		return nil, &runtime.Error{Kind: runtime.StartFailed, Err: err,
			Message: fmt.Sprintf("function %s: starting %s", t.spec.Function, t.what())}
	}
	return in, nil
}

// await waits until in's bootstrap asks for its first event.
func (t *template) await(ctx context.Context, in *instance) (runtime.Instance, error) {
	timer := time.NewTimer(t.rt.cfg.StartTimeout)
	defer timer.Stop()
	var fail *runtime.Error
	select {
	case <-in.api.ready:
		return in, nil
	case doc := <-in.api.initErr:
		fail = runtime.Errorf(runtime.StartFailed, "function %s failed to initialise: %s", t.spec.Function, describe(doc))
	case <-in.p.Done():
		fail = runtime.Errorf(runtime.StartFailed, "function %s: %s exited before asking for an event (%s)%s",
			t.spec.Function, t.what(), exitStatus(in.p.ExitErr()), in.stderrTail())
	case <-timer.C:
		fail = runtime.Errorf(runtime.StartFailed, "function %s: %s did not ask for an event within %s%s",
			t.spec.Function, t.what(), t.rt.cfg.StartTimeout, in.stderrTail())
	case <-ctx.Done():
		fail = &runtime.Error{Kind: runtime.StartFailed, Err: ctx.Err(),
			Message: fmt.Sprintf("function %s: start of %s abandoned", t.spec.Function, t.what())}
	}
	_ = in.Close()
	return nil, fail
}

// what names the started program for messages.
func (t *template) what() string {
	switch t.spec.Runtime {
	case runtime.Python3:
		return "the python3 runtime"
	case runtime.NodeJS:
		return "the nodejs runtime"
	}
	return "bootstrap"
}

func describe(doc errorDoc) string {
	msg := doc.ErrorMessage
	if doc.ErrorType != "" && doc.ErrorType != "Unhandled" {
		msg = doc.ErrorType + ": " + msg
	}
	return msg
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (in *instance) stderrTail() string {
	if s := in.stderr.lastOutput(); s != "" {
		return "; stderr: " + s
	}
	return ""
}

// Invoke hands the event to the bootstrap and waits for its answer.
func (in *instance) Invoke(ctx context.Context, req *runtime.Request, w http.ResponseWriter) error {
	select {
	case in.sem <- struct{}{}:
		defer func() { <-in.sem }()
	case <-ctx.Done():
		return in.timedOut(ctx, false)
	}
	if in.broken.Load() {
		return runtime.Errorf(runtime.Crashed, "function %s: instance is no longer usable", in.t.spec.Function)
	}
	now := time.Now()
	deadline := req.Deadline
	if deadline.IsZero() {
		if d, ok := ctx.Deadline(); ok {
			deadline = d
		} else {
			timeout := in.t.spec.Timeout
			if timeout <= 0 {
				timeout = defaultTimeout
			}
			deadline = now.Add(timeout)
		}
	}
	// The earlier of ctx's deadline and the request's holds.
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	event, err := in.event(req, now)
	if err != nil {
		return err
	}
	inv := &invocation{
		id:       req.InvocationID,
		event:    event,
		deadline: deadline,
		arn:      functionARN(in.t.spec.Function),
		traceID:  traceID(req.Header, now),
		done:     make(chan apiResult, 1),
	}
	if inv.id == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		inv.id = hex.EncodeToString(b[:])
	}

	select {
	case in.api.events <- inv:
	case <-ctx.Done():
		return in.timedOut(ctx, true)
	case <-in.p.Done():
		return in.crashed()
	}
	var res apiResult
	select {
	case res = <-inv.done:
	case <-ctx.Done():
		return in.timedOut(ctx, true)
	case <-in.p.Done():
		select {
		case res = <-inv.done: // answered just before exiting
		default:
			return in.crashed()
		}
	}

	switch {
	case res.protoErr != "":
		in.discard()
		return runtime.Errorf(runtime.BadResponse, "function %s: %s", in.t.spec.Function, res.protoErr)
	case res.fnErr != nil:
		return &runtime.Error{Kind: runtime.FunctionError, Type: res.fnErr.ErrorType, Message: res.fnErr.ErrorMessage}
	case req.Raw:
		writeJSON(w, res.body)
		return nil
	}
	if err := writeHTTPResult(w, res.body); err != nil {
		in.discard()
		return err
	}
	return nil
}

// event reads the request into the event the bootstrap receives.
func (in *instance) event(req *runtime.Request, now time.Time) ([]byte, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(req.Body, maxPayload+1))
		if err != nil {
			// The caller's request broke, not the instance: it stays usable.
			return nil, &runtime.Error{Kind: runtime.FunctionError, Type: "Nimbus.RequestBodyError",
				Message: "reading the request body failed", Err: err}
		}
	}
	if len(body) > maxPayload {
		return nil, &runtime.Error{Kind: runtime.FunctionError, Type: "Nimbus.RequestTooLarge",
			Message: "the request body is larger than the 6 MiB limit of lambda functions"}
	}
	var event []byte
	if req.Raw {
		event = rawEvent(body)
	} else {
		var err error
		if event, err = HTTPEvent(req, body, now); err != nil {
			return nil, fmt.Errorf("function %s: building the HTTP event: %w", in.t.spec.Function, err)
		}
	}
	if len(event) > maxPayload {
		return nil, &runtime.Error{Kind: runtime.FunctionError, Type: "Nimbus.RequestTooLarge",
			Message: "the event is larger than the 6 MiB limit of lambda functions"}
	}
	return event, nil
}

// timedOut fails an invocation whose context ended; a running one leaves the
// instance unusable, so it is killed at once.
func (in *instance) timedOut(ctx context.Context, running bool) error {
	if running {
		in.discard()
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &runtime.Error{Kind: runtime.TimedOut, Err: ctx.Err(),
			Message: fmt.Sprintf("function %s timed out", in.t.spec.Function)}
	}
	return &runtime.Error{Kind: runtime.TimedOut, Err: ctx.Err(),
		Message: fmt.Sprintf("function %s: invocation cancelled", in.t.spec.Function)}
}

func (in *instance) crashed() error {
	in.broken.Store(true)
	msg := fmt.Sprintf("function %s: the process exited during the invocation (%s)%s",
		in.t.spec.Function, exitStatus(in.p.ExitErr()), in.stderrTail())
	if outOfMemory(in.p) {
		return &runtime.Error{Kind: runtime.OutOfMemory, Message: msg}
	}
	return &runtime.Error{Kind: runtime.Crashed, Message: msg}
}

// discard marks the instance unusable and kills its process.
func (in *instance) discard() {
	in.broken.Store(true)
	_ = in.p.Kill()
}

// Close kills the process tree, stops the Runtime API server and waits for
// both.
func (in *instance) Close() error {
	in.closeOnce.Do(func() {
		in.broken.Store(true)
		if in.p != nil {
			if err := in.p.Kill(); err != nil {
				in.t.rt.log.Warn("killing a bootstrap process failed",
					"function", in.t.spec.Function, "pid", in.p.Pid(), "err", err)
			}
		}
		in.api.close()
		in.stdout.flush()
		in.stderr.flush()
	})
	return nil
}
