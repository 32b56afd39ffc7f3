package wasm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A context derived from a call's context during the call (as a host
// function's HTTP request or context.WithCancel makes one) must see the call
// end, and keep seeing it ended: the call's context is not reused for the
// next call once it was watched.
func TestInvokeCtxWatchedIsNotReused(t *testing.T) {
	c := new(invokeCtx)
	c.begin(context.Background(), nil, time.Now().Add(time.Hour))
	child, cancel := context.WithCancel(c)
	defer cancel()
	if c.end() {
		t.Fatal("end reported a watched context reusable")
	}
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a context derived from the call was not cancelled when the call ended")
	}
	if !errors.Is(child.Err(), context.Canceled) || c.Err() == nil {
		t.Fatalf("after the call: child %v, call %v; want both ended", child.Err(), c.Err())
	}

	// Unwatched, it is reset for the next call.
	c = new(invokeCtx)
	c.begin(context.Background(), nil, time.Now().Add(time.Hour))
	if !c.end() {
		t.Fatal("an unwatched call context should be reusable")
	}
}
