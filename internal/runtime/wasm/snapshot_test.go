package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

func isSnapshot(tpl runtime.Template) bool {
	_, snap, _ := tpl.(*template).current()
	return snap
}

func TestSnapshotHello(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{Function: "hello", Snapshot: true}, helloMod.get(t))
	if !isSnapshot(tpl) {
		t.Fatal("examples/hello was not snapshotted")
	}
	in := newInstance(t, tpl)
	rec := mustInvoke(t, in, request("GET", "/?name=Ada", nil))
	if rec.code != 200 || rec.body.String() != "Hello, Ada!" || rec.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("got %d %q %v", rec.code, rec.body.String(), rec.header)
	}
}

// TestSnapshotMatchesPlain runs the same long sequence of requests on a
// snapshot instance and a plain one and wants identical answers.
func TestSnapshotMatchesPlain(t *testing.T) {
	r := newRuntime(t)
	snapT := snapGuest(t)
	plainSpec := sharedSnapSpec
	plainSpec.Snapshot = false
	plainT := prepare(t, r, plainSpec, guestMod.get(t))
	if !isSnapshot(snapT) || isSnapshot(plainT) {
		t.Fatalf("snapshot = %v / %v, want true / false", isSnapshot(snapT), isSnapshot(plainT))
	}
	snap, plain := newInstance(t, snapT), newInstance(t, plainT)
	targets := []string{"/count", "/init-env", "/env?name=GREETING", "/clock", "/nope", "/count-twice"}
	for i := range 60 {
		var reqs []*runtime.Request
		for _, target := range targets {
			reqs = append(reqs, request("GET", target, nil))
		}
		reqs = append(reqs, request("GET", fmt.Sprintf("/mix?n=%d", i*53), nil))
		body := bytes.Repeat([]byte{byte(i)}, i*997)
		mk := func() *runtime.Request {
			req := request("PUT", fmt.Sprintf("/echo?i=%d&status=202", i), body)
			req.Header.Set("X-Test-I", fmt.Sprint(i))
			return req
		}
		for _, req := range reqs {
			cmp(t, mustInvoke(t, plain, req), mustInvoke(t, snap, cloneReq(req)), req.Path)
		}
		cmp(t, mustInvoke(t, plain, mk()), mustInvoke(t, snap, mk()), "/echo")
	}
	if got := mustInvoke(t, snap, request("GET", "/clock", nil)).body.String(); got != "mono-forward=true wall-recent=true" {
		t.Fatalf("clock: %q", got)
	}
	if got := mustInvoke(t, snap, request("GET", "/init-env", nil)).body.String(); got != "hej" {
		t.Fatalf("env read at init: %q", got)
	}
}

func cloneReq(r *runtime.Request) *runtime.Request {
	c := *r
	c.Header = r.Header.Clone()
	return &c
}

func cmp(t *testing.T, a, b *recorder, what string) {
	t.Helper()
	if a.code != b.code || !bytes.Equal(a.body.Bytes(), b.body.Bytes()) || !maps.EqualFunc(a.header, b.header, slices.Equal) {
		t.Fatalf("%s: plain answered %d %v %q, snapshot %d %v %q", what, a.code, a.header, a.body.String(), b.code, b.header, b.body.String())
	}
}

func TestSnapshotOff(t *testing.T) {
	// A cache of its own: other tests record refusals in the shared one.
	r, err := New(context.Background(), Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	tpl := prepare(t, r, runtime.Spec{Function: "hello", Snapshot: false}, helloMod.get(t))
	if isSnapshot(tpl) {
		t.Fatal("Snapshot: false gave a snapshot")
	}
	if rec := mustInvoke(t, newInstance(t, tpl), request("GET", "/", nil)); rec.body.String() != "Hello, world!" {
		t.Fatalf("got %q", rec.body.String())
	}
	if entries, _ := os.ReadDir(filepath.Join(r.cfg.CacheDir, "snapshots")); len(entries) > 0 {
		for _, e := range entries {
			if strings.Contains(e.Name(), "refused") {
				t.Fatalf("a refusal was recorded for a function that asked for no snapshot: %s", e.Name())
			}
		}
	}
}

// passiveDataModule is a tiny reactor with a passive data segment, which a
// snapshot cannot reproduce.
func passiveDataModule() []byte {
	m := tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32")
	return cat(m, section(11, vec(cat([]byte{1}, wname("passive")))))
}

func TestSnapshotFallsBack(t *testing.T) {
	r := newRuntime(t)
	t.Run("passive data", func(t *testing.T) {
		tpl := prepare(t, r, runtime.Spec{Snapshot: true}, passiveDataModule())
		if isSnapshot(tpl) {
			t.Fatal("a module with a passive data segment was snapshotted")
		}
		if rec := mustInvoke(t, newInstance(t, tpl), request("GET", "/", nil)); rec.code != 200 {
			t.Fatalf("status %d", rec.code)
		}
	})
	t.Run("table mutation", func(t *testing.T) {
		_, err := analyseForSnapshot(tableSetModule())
		var ns *errNoSnapshot
		if !errors.As(err, &ns) || !strings.Contains(err.Error(), "table.set") {
			t.Fatalf("analyse: %v", err)
		}
	})
	t.Run("answers differ", func(t *testing.T) {
		// ROOT=random makes GET / answer random bytes: the check at Prepare
		// sees the snapshot differ and keeps the plain module.
		tpl := prepare(t, r, runtime.Spec{Function: "guest", Env: map[string]string{"ROOT": "random"}, Snapshot: true}, guestMod.get(t))
		if isSnapshot(tpl) {
			t.Fatal("a snapshot that answers differently was used")
		}
		if rec := mustInvoke(t, newInstance(t, tpl), request("GET", "/count", nil)); rec.body.String() != "1" {
			t.Fatalf("got %q", rec.body.String())
		}
	})
	t.Run("tiny module snapshots", func(t *testing.T) {
		tpl := prepare(t, r, runtime.Spec{Snapshot: true}, tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32"))
		if !isSnapshot(tpl) {
			t.Fatal("the tiny module was not snapshotted")
		}
		if rec := mustInvoke(t, newInstance(t, tpl), request("GET", "/", nil)); rec.code != 200 {
			t.Fatalf("status %d", rec.code)
		}
	})
}

// tableSetModule has a function that stores into a table.
func tableSetModule() []byte {
	types := section(1, vec([]byte{0x60, 0, 0}))
	funcs := section(3, vec([]byte{0}))
	tables := section(4, vec([]byte{0x70, 0, 1}))
	mem := section(5, vec([]byte{0, 1}))
	// i32.const 0, ref.null func, table.set 0, end
	code := section(10, vec(cat(leb(8), []byte{0, 0x41, 0, 0xd0, 0x70, 0x26, 0, 0x0b})))
	return cat([]byte("\x00asm\x01\x00\x00\x00"), types, funcs, tables, mem, code)
}

func TestSnapshotInstancesAreIsolated(t *testing.T) {
	tpl := snapGuest(t)
	r := sharedSnap.r
	a := newInstance(t, tpl)
	b := newInstance(t, tpl) // one of the two may be the template's spare
	ma, mb := a.(*reactor).mem.mem.buf, b.(*reactor).mem.mem.buf
	if len(ma) == 0 || len(mb) == 0 || &ma[0] == &mb[0] {
		t.Fatal("instances do not each have their own linear memory")
	}
	for i := 1; i <= 5; i++ {
		if got := mustInvoke(t, a, request("GET", "/count", nil)).body.String(); got != fmt.Sprint(i) {
			t.Fatalf("a: count %q, want %d", got, i)
		}
	}
	if got := mustInvoke(t, b, request("GET", "/count", nil)).body.String(); got != "1" {
		t.Fatalf("b sees a's state: count %q", got)
	}
	ra := mustInvoke(t, a, request("GET", "/rand", nil)).body.String()
	rb := mustInvoke(t, b, request("GET", "/rand", nil)).body.String()
	if ra == rb || len(ra) != 32 {
		t.Fatalf("two snapshot instances drew the same crypto/rand bytes %q", ra)
	}
	// A closed instance's memory is reused, clean, by the next one.
	pooled := r.PooledMemoryBytes()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if r.PooledMemoryBytes() <= pooled {
		t.Fatalf("closing an idle instance pooled no memory (%d bytes pooled)", r.PooledMemoryBytes())
	}
	c := newInstance(t, tpl)
	if got := mustInvoke(t, c, request("GET", "/count", nil)).body.String(); got != "1" {
		t.Fatalf("an instance on reused memory sees old state: count %q", got)
	}
	if got := mustInvoke(t, c, request("GET", "/init-env", nil)).body.String(); got != "hej" {
		t.Fatalf("an instance on reused memory lost its snapshot: %q", got)
	}
}

func TestSnapshotDiskCache(t *testing.T) {
	dir := t.TempDir()
	prep := func() (runtime.Template, time.Duration, func()) {
		r, err := New(context.Background(), Config{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		spec := runtime.Spec{Function: "hello", Version: 1, Runtime: runtime.Wasm, Snapshot: true}
		tpl, err := r.Prepare(context.Background(), &spec, helloMod.get(t))
		if err != nil {
			t.Fatal(err)
		}
		tpl.(*template).snapshotNow(context.Background())
		return tpl, time.Since(start), func() { tpl.Close(); r.Close(context.Background()) }
	}
	tpl, first, done := prep()
	if !isSnapshot(tpl) {
		t.Fatal("no snapshot")
	}
	done()
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*.snap"))
	if len(snaps) != 1 {
		t.Fatalf("snapshot files: %v", snaps)
	}
	tpl, second, done := prep()
	defer done()
	if !isSnapshot(tpl) {
		t.Fatal("no snapshot after restart")
	}
	in := newInstance(t, tpl)
	if rec := mustInvoke(t, in, request("GET", "/?name=again", nil)); rec.body.String() != "Hello, again!" {
		t.Fatalf("got %q", rec.body.String())
	}
	t.Logf("Prepare of examples/hello with a snapshot: %v taking it (empty cache), %v from the disk cache", first, second)
}

// TestSnapshotInBackground: the first instance starts from the plain module
// and starts the snapshot; later instances start from it.
func TestSnapshotAtDeploySharedByConfig(t *testing.T) {
	r := newRuntime(t)
	spec := runtime.Spec{Function: "hello-a", Version: 1, Runtime: runtime.Wasm, Snapshot: true}
	tpl, err := r.Prepare(context.Background(), &spec, helloMod.get(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	if !isSnapshot(tpl) {
		t.Fatal("Prepare did not leave a snapshot: the first start would be a plain one")
	}
	if rec := mustInvoke(t, newInstance(t, tpl), request("GET", "/?name=a", nil)); rec.body.String() != "Hello, a!" {
		t.Fatalf("got %q", rec.body.String())
	}
	// Another function with the same code and configuration reuses the image.
	compiles := r.ModuleCacheStats().Compiles
	spec2 := runtime.Spec{Function: "hello-b", Tenant: "other", Version: 3, Runtime: runtime.Wasm, Snapshot: true}
	tpl2, err := r.Prepare(context.Background(), &spec2, helloMod.get(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tpl2.Close()
	if !isSnapshot(tpl2) {
		t.Fatal("second function has no snapshot")
	}
	// Loading the shared image from the disk cache compiles it once at
	// most; taking a new snapshot would compile the capture module too.
	if got := r.ModuleCacheStats().Compiles; got > compiles+1 {
		t.Fatalf("same code and config snapshotted again: %d → %d compiles", compiles, got)
	}
	if rec := mustInvoke(t, newInstance(t, tpl2), request("GET", "/?name=b", nil)); rec.body.String() != "Hello, b!" {
		t.Fatalf("got %q", rec.body.String())
	}
}

func TestModuleLRU(t *testing.T) {
	r, err := New(context.Background(), Config{CacheDir: sharedCache, MaxModules: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	r.spares.SetOff(true) // a spare would keep hello's module in use
	hello := prepare(t, r, runtime.Spec{Function: "hello", Snapshot: true}, helloMod.get(t))
	tiny := prepare(t, r, runtime.Spec{Function: "tiny", Runtime: runtime.WasmCGI}, tinyModule(nil, "_start"))
	_ = tiny
	st := r.ModuleCacheStats()
	if st.Modules != 1 || st.Evictions == 0 {
		t.Fatalf("stats after two templates with MaxModules 1: %+v", st)
	}
	compiles := st.Compiles
	// hello's module was evicted: its next instance reloads it.
	in := newInstance(t, hello)
	if rec := mustInvoke(t, in, request("GET", "/", nil)); rec.body.String() != "Hello, world!" {
		t.Fatalf("got %q", rec.body.String())
	}
	st = r.ModuleCacheStats()
	if st.Compiles != compiles+1 || st.Modules != 1 {
		t.Fatalf("stats after reload: %+v (compiles before %d)", st, compiles)
	}
	// Closing the template and its instance drops its module.
	_ = in.Close()
	_ = hello.Close()
	if st := r.ModuleCacheStats(); st.Modules != 0 {
		t.Fatalf("stats after close: %+v", st)
	}
}
