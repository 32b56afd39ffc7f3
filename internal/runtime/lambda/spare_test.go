package lambda

import (
	"bytes"
	"context"
	"fmt"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// procState is the state letter of a process (R, S, t, Z, …).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))[0]
}

func spareOf(t *template) *instance {
	in, _ := t.spares.Peek()
	return in
}

// withSpare prepares the Go Lambda function fn (closed at cleanup) and
// waits for its spare; it skips the test where processes cannot be held.
func withSpare(t *testing.T, rt *Runtime, fn string) (*template, *instance) {
	t.Helper()
	tpl, err := rt.Prepare(context.Background(), testSpec(runtime.Lambda, fn, nil), readFile(t, goLambdaPath))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tpl.Close() })
	tt := tpl.(*template)
	waitSpare(t, tt)
	held := spareOf(tt)
	if !held.p.Held() {
		t.Skip("processes cannot be held here (no ptrace)")
	}
	return tt, held
}

// add invokes inst with a raw event adding a and b, and checks the sum.
func add(t *testing.T, ctx context.Context, inst runtime.Instance, a, b int) {
	t.Helper()
	w := httptest.NewRecorder()
	req := &runtime.Request{InvocationID: "spare", Raw: true, Header: http.Header{},
		Body: strings.NewReader(fmt.Sprintf(`{"op":"add","a":%d,"b":%d}`, a, b)), ContentLength: -1}
	if err := inst.Invoke(ctx, req, w); err != nil || w.Body.String() != fmt.Sprintf(`{"sum":%d}`, a+b) {
		t.Fatalf("answered %q, %v", w.Body, err)
	}
}

// A prepared template holds a spare whose process has not run; a cold
// start takes it and answers, the next spare follows, and Close leaves no
// process behind.
func TestSpareInstances(t *testing.T) {
	needBuilds(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tt, held := withSpare(t, rt, "sparefn")
	tpl := runtime.Template(tt)
	if st := procState(t, held.p.Pid()); st != "t" {
		t.Fatalf("spare process is in state %s, want t (stopped before its first instruction)", st)
	}
	if rt.spares.Count() != 1 {
		t.Fatalf("spares = %d, want 1", rt.spares.Count())
	}

	inst, err := tpl.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inst.(*instance) != held {
		t.Fatal("the cold start did not take the spare")
	}
	add(t, ctx, inst, 1, 2)
	waitSpare(t, tt)
	next := spareOf(tt)
	if next == held {
		t.Fatal("the spare taken is still the template's spare")
	}
	_ = inst.Close()
	waitGone(t, held)

	_ = tpl.Close()
	waitGone(t, next)
	if rt.spares.Count() != 0 {
		t.Fatalf("spares = %d after Close, want 0", rt.spares.Count())
	}
	// A closed template makes no spare, even after a start.
	if in, err := tpl.NewInstance(ctx); err == nil {
		_ = in.Close()
	}
	time.Sleep(3 * spare.Delay)
	if spareOf(tt) != nil || rt.spares.Count() != 0 {
		t.Fatal("a closed template made a spare")
	}
}

// At most the runtime's maximum of spares exist: a new one replaces the
// oldest; one unused for the linger time is killed.
func TestSpareLimitAndLinger(t *testing.T) {
	needBuilds(t)
	rt := newTestRuntime(t)
	rt.spares.Max, rt.spares.Linger = 1, 2*time.Second
	a, old := withSpare(t, rt, "spare-a")
	b, newer := withSpare(t, rt, "spare-b")
	if spareOf(a) != nil || rt.spares.Count() != 1 {
		t.Fatalf("the oldest spare was not replaced (count %d)", rt.spares.Count())
	}
	waitGone(t, old)
	eventually(t, 10*time.Second, func() error {
		if spareOf(b) != nil || rt.spares.Count() != 0 {
			return fmt.Errorf("spare still there after its linger time")
		}
		return nil
	})
	waitGone(t, newer)
}

// A spare whose process died while held is thrown away: the cold start
// starts a fresh process and answers.
func TestSpareDiedWhileHeld(t *testing.T) {
	needBuilds(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tpl, held := withSpare(t, rt, "sparedied")
	if err := syscall.Kill(held.p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if st := procState(t, held.p.Pid()); st != "Z" {
			return fmt.Errorf("killed spare in state %s", st)
		}
		return nil
	})
	inst, err := tpl.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if inst.(*instance) == held {
		t.Fatal("the dead spare was used")
	}
	add(t, ctx, inst, 2, 2)
	waitGone(t, held)
}
