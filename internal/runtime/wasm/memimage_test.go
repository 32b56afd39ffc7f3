package wasm

import (
	"bytes"
	"context"
	"testing"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// The split snapshot's image is the memory its data segments build, and its
// code is the snapshot without them.
func TestSplitSnapshot(t *testing.T) {
	mem := make([]byte, 3*pageSize)
	copy(mem[100:], "first")
	copy(mem[2*pageSize+7:], "last page")
	mem[len(mem)-1] = 0xff
	code := tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32")
	m, err := analyseForSnapshot(code)
	if err != nil {
		t.Fatal(err)
	}
	snap := m.snapshotCode(mem, nil)
	split, img, err := splitSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img.data, mem) {
		t.Fatal("image differs from the captured memory")
	}
	sm, err := analyseForSnapshot(split)
	if err != nil {
		t.Fatal(err)
	}
	if sm.section(secData) != nil || sm.section(secDataCount) != nil {
		t.Fatal("split code still has data segments")
	}
	if _, img2, _ := splitSnapshot(snap); img2.id == img.id {
		t.Fatal("two splits share an image id")
	}
}

// A pooled buffer comes back holding the image it was restored to, zeroed
// past it; reused for another image or for a plain instance, nothing of the
// first shows.
func TestBufPoolImages(t *testing.T) {
	p := newBufPool(1 << 20)
	a := &memImage{id: 1, data: bytes.Repeat([]byte{0xaa}, 2*pageSize)}
	b := &memImage{id: 2, data: bytes.Repeat([]byte{0xbb}, pageSize)}
	const capacity = 4 * pageSize

	buf := make([]byte, 3*pageSize, capacity)
	for i := range buf {
		buf[i] = 0x11 // an instance's dirty memory, grown past the image
	}
	p.put(buf, a)
	got, ready := p.get(capacity, a)
	if !ready || cap(got) != capacity {
		t.Fatalf("ready=%v cap=%d, want a ready buffer of the image", ready, cap(got))
	}
	full := got[:capacity]
	if !bytes.Equal(full[:len(a.data)], a.data) || !allZero(full[len(a.data):]) {
		t.Fatal("buffer does not hold exactly the image")
	}

	p.put(full[:3*pageSize], a)
	got, ready = p.get(capacity, b)
	if ready {
		t.Fatal("a buffer of image a is not ready for image b")
	}
	full = got[:capacity]
	if !allZero(full[len(b.data):]) {
		t.Fatal("what image a left past image b was not zeroed")
	}

	p.put(full[:len(a.data)], a)
	got, _ = p.get(capacity, nil)
	if !allZero(got[:capacity]) {
		t.Fatal("a plain instance got a buffer that is not zeroed")
	}
	if p.bytes() != 0 {
		t.Fatalf("pool holds %d bytes, want 0", p.bytes())
	}
}

// Instances of a snapshot that reuse the memory of closed ones start from the
// snapshot, not from where the closed one was.
func TestSnapshotReusedMemoryStartsFresh(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{Function: "guest", Env: map[string]string{"GREETING": "hej"}, MemoryMB: 48, Snapshot: true}, guestMod.get(t))
	if !isSnapshot(tpl) {
		t.Fatal("no snapshot")
	}
	for round := range 4 {
		in, err := tpl.NewInstance(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for want := 1; want <= 3; want++ {
			rec := mustInvoke(t, in, request("GET", "/count", nil))
			if got := rec.body.String(); got != string(rune('0'+want)) {
				t.Fatalf("round %d: /count = %q, want %d", round, got, want)
			}
		}
		if round == 1 {
			// Dirty more of the memory.
			mustInvoke(t, in, request("PUT", "/echo", bytes.Repeat([]byte("x"), 256<<10)))
			mustInvoke(t, in, request("GET", "/mix?n=500", nil))
		}
		if rec := mustInvoke(t, in, request("GET", "/init-env", nil)); rec.code != 200 {
			t.Fatalf("round %d: /init-env answered %d", round, rec.code)
		}
		_ = in.Close()
	}
	if r.PooledMemoryBytes() == 0 {
		t.Fatal("closed instances left no memory in the pool")
	}
}
