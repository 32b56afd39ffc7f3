//go:build linux

package process

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// procState is the state letter of a process (R, S, t, Z, …), "" if gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))[0]
}

// waitSpare waits for tpl's spare other than the instance not.
func waitSpare(t *testing.T, tpl *Template, not *Instance) *Instance {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if in, ok := tpl.spares.Peek(); ok && in != not {
			return in
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no spare was made")
	return nil
}

// waitGone waits until pid has exited (reaped or a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st := procState(pid); st == "" || st == "Z" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d still there", pid)
}

// TestSpareInstances: a prepared template holds a spare before its first
// instruction; a cold start takes it and it answers; the next spare is made
// after the start; a spare whose port was taken meanwhile is discarded for a
// fresh start; Close discards the spare.
func TestSpareInstances(t *testing.T) {
	rt := newRuntime(t)
	tpl0, _ := prepare(t, rt, testServer(t), "", nil)
	tpl := tpl0.(*Template)
	held, ok := tpl.spares.Peek()
	if !ok {
		if rt.spares.Off() {
			t.Skip("processes cannot be held stopped here: no spares")
		}
		t.Fatal("Prepare returned without a spare")
	}
	if st := procState(held.Pid()); st != "t" {
		t.Fatalf("spare process is in state %q, want t (stopped before its first instruction)", st)
	}

	in := start(t, tpl)
	if in != held {
		t.Fatal("the cold start did not take the spare")
	}
	if rec, err := call(t, in, t.Context(), "GET", "/hello", nil); err != nil || rec.Code != 200 {
		t.Fatalf("spare instance: %v %d %s", err, rec.Code, rec.Body)
	}

	next := waitSpare(t, tpl, held)
	if st := procState(next.Pid()); st != "t" {
		t.Fatalf("next spare in state %q", st)
	}
	// Someone else listens on the next spare's port: the start must not
	// let it go (it could not listen), but start afresh.
	l, err := net.Listen("tcp", next.addr)
	if err != nil {
		t.Fatalf("taking the spare's port: %v", err)
	}
	defer l.Close()
	fresh := start(t, tpl)
	if fresh == next || fresh.addr == next.addr {
		t.Fatal("a spare whose port was taken was let go")
	}
	waitGone(t, next.Pid())
	if rec, err := call(t, fresh, t.Context(), "GET", "/hello", nil); err != nil || rec.Code != 200 {
		t.Fatalf("fresh instance: %v %d %s", err, rec.Code, rec.Body)
	}

	last := waitSpare(t, tpl, next)
	_ = tpl.Close()
	waitGone(t, last.Pid())
	if n := rt.spares.Count(); n != 0 {
		t.Fatalf("%d spares after Close, want 0", n)
	}
}
