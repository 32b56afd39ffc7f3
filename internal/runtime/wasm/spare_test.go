package wasm

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// spareOf returns the template's spare, or nil.
func spareOf(tpl runtime.Template) *reactor {
	sl := tpl.(*template).spares
	if sl == nil {
		return nil
	}
	in, _ := sl.Peek()
	return in
}

// waitNewSpare waits until tpl holds a spare other than not.
func waitNewSpare(t *testing.T, tpl runtime.Template, not *reactor) *reactor {
	t.Helper()
	var in *reactor
	eventually(t, 20*time.Second, func() error {
		if in = spareOf(tpl); in == nil || in == not {
			return fmt.Errorf("no new spare")
		}
		return nil
	})
	return in
}

// A module that runs no code when instantiated keeps a spare instance from
// deploy on: a cold start takes it, the next one follows, and Close
// discards it.
func TestSpareInstances(t *testing.T) {
	r := newRuntime(t)
	for _, c := range []struct {
		name string
		spec runtime.Spec
		code []byte
		want string
	}{
		{"tiny", runtime.Spec{Function: "tiny"}, tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32"), ""},
		{"snapshot", runtime.Spec{Function: "hello", Snapshot: true}, helloMod.get(t), "Hello, world!"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tpl := prepare(t, r, c.spec, c.code)
			held := waitNewSpare(t, tpl, nil)
			in, err := tpl.NewInstance(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if in.(*reactor) != held {
				t.Fatal("the cold start did not take the spare")
			}
			if got := mustInvoke(t, in, request("GET", "/", nil)).body.String(); got != c.want {
				t.Fatalf("the spare answered %q, want %q", got, c.want)
			}
			next := waitNewSpare(t, tpl, held)
			if r.spares.Count() != 1 {
				t.Fatalf("%d spares, want 1", r.spares.Count())
			}
			_ = in.Close()
			_ = tpl.Close()
			if !next.closed.Load() || r.spares.Count() != 0 {
				t.Fatalf("Close left the spare (closed %v, %d spares)", next.closed.Load(), r.spares.Count())
			}
		})
	}
}

// A module whose instantiation runs its code (initialisation without a
// snapshot, a start function) has no spare: it would run with no
// invocation to show for it.
func TestNoSpareWhenInstantiationRunsCode(t *testing.T) {
	r := newRuntime(t)
	tiny := tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32")
	code := section(10, vec([]byte{2, 0, 0x0b}, []byte{4, 0, 0x41, 0, 0x0b}))
	if !bytes.HasSuffix(tiny, code) {
		t.Fatal("tinyModule no longer ends with the code section this test expects")
	}
	withStart := cat(tiny[:len(tiny)-len(code)], section(8, leb(0)), code)
	for _, c := range []struct {
		name string
		spec runtime.Spec
		code []byte
	}{
		{"plain Go", runtime.Spec{Function: "plain"}, helloMod.get(t)},
		{"start function", runtime.Spec{Function: "start"}, withStart},
	} {
		t.Run(c.name, func(t *testing.T) {
			tpl := prepare(t, r, c.spec, c.code)
			mustInvoke(t, newInstance(t, tpl), request("GET", "/", nil))
			time.Sleep(3 * spare.Delay)
			if spareOf(tpl) != nil || r.spares.Count() != 0 {
				t.Fatalf("a spare was made (%d spares)", r.spares.Count())
			}
		})
	}
}
