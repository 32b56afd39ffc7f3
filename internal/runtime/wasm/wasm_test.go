package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name string
		code []byte
		want string
		err  string
	}{
		{"sdk reactor", helloMod.get(t), runtime.Wasm, ""},
		{"cgi command", cgiMod.get(t), runtime.WasmCGI, ""},
		{"tiny reactor", tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32"), runtime.Wasm, ""},
		{"tiny command", tinyModule(nil, "_start"), runtime.WasmCGI, ""},
		{"not wasm", []byte("#!/bin/sh\necho hi\n"), "", "not a WebAssembly module (bad magic)"},
		{"empty", nil, "", "bad magic"},
		{"truncated", helloMod.get(t)[:1000], "", "malformed WebAssembly module"},
		{"no entry point", tinyModule(nil, "foo"), "", "neither nimbus_handle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Detect(tc.code)
			if tc.err != "" {
				wantKind(t, err, runtime.BadCode, tc.err)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Detect = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestPrepareRefusesBadCode(t *testing.T) {
	r := newRuntime(t)
	for _, tc := range []struct {
		name    string
		runtime string
		memory  int
		code    []byte
		want    string
	}{
		{"not wasm", runtime.Wasm, 0, []byte("hello"), "not a WebAssembly module (bad magic)"},
		{"unknown import", runtime.WasmCGI, 0, tinyModule([][3]any{{"env", "foo", 0}}, "_start"),
			`module imports "env"."foo", which Nimbus does not provide`},
		{"unknown wasi function", runtime.WasmCGI, 0, tinyModule([][3]any{{"wasi_snapshot_preview1", "sock_teleport", 0}}, "_start"),
			`"wasi_snapshot_preview1"."sock_teleport"`},
		{"host import with wrong type", runtime.Wasm, 0,
			tinyModule([][3]any{{"nimbus", "request_method", 0}}, "nimbus_abi_version_1", "nimbus_handle!i32"),
			`"nimbus"."request_method" with type () -> (), but Nimbus provides (i32, i32) -> (i32)`},
		{"handle with wrong type", runtime.Wasm, 0, tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle"),
			"nimbus_handle with type () -> ()"},
		{"command as wasm", runtime.Wasm, 0, cgiMod.get(t), "deploy it with runtime wasm-cgi"},
		{"reactor as cgi", runtime.WasmCGI, 0, helloMod.get(t), "deploy it with runtime wasm"},
		{"no abi version", runtime.Wasm, 0, tinyModule(nil, "nimbus_handle!i32"), "nimbus_abi_version_1"},
		{"future abi", runtime.Wasm, 0, tinyModule(nil, "nimbus_abi_version_2", "nimbus_handle!i32"), "built for Nimbus ABI v2"},
		{"memory over cap", runtime.Wasm, 1, helloMod.get(t), "more than its cap of 1 MB"},
		{"broken code", runtime.WasmCGI, 0, corruptCode(tinyModule(nil, "_start")), "module does not compile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &runtime.Spec{Function: "bad", Version: 1, Runtime: tc.runtime, MemoryMB: tc.memory}
			_, err := r.Prepare(context.Background(), spec, tc.code)
			wantKind(t, err, runtime.BadCode, tc.want)
		})
	}
}

// corruptCode replaces the body of the last function with an invalid opcode.
func corruptCode(m []byte) []byte {
	m = bytes.Clone(m)
	m[len(m)-1] = 0xff
	return m
}

func TestHello(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{Function: "hello"}, helloMod.get(t)))
	rec := mustInvoke(t, in, request("GET", "/?name=Ada", nil))
	if rec.code != 200 || rec.body.String() != "Hello, Ada!" {
		t.Fatalf("got %d %q", rec.code, rec.body.String())
	}
	if ct := rec.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if cl := rec.header.Get("Content-Length"); cl != "11" {
		t.Fatalf("Content-Length = %q", cl)
	}
	rec = mustInvoke(t, in, request("GET", "/", nil))
	if rec.body.String() != "Hello, world!" {
		t.Fatalf("got %q", rec.body.String())
	}
}

func TestTinyReactor(t *testing.T) {
	r := newRuntime(t)
	code := tinyModule(nil, "nimbus_abi_version_1", "nimbus_handle!i32")
	if rt, err := Detect(code); err != nil || rt != runtime.Wasm {
		t.Fatalf("Detect = %q, %v", rt, err)
	}
	in := newInstance(t, prepare(t, r, runtime.Spec{}, code))
	for range 3 {
		rec := mustInvoke(t, in, request("GET", "/", nil))
		if rec.code != 200 || rec.body.Len() != 0 {
			t.Fatalf("got %d %q", rec.code, rec.body.String())
		}
	}
}

func TestEchoRoundTrip(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{Function: "guest"}, guestMod.get(t)))
	body := make([]byte, 1<<20)
	rand.Read(body)
	req := request("PUT", "/echo?a=1&b=two%20words&status=201", body)
	req.Header.Add("X-Test-One", "1")
	req.Header.Add("X-Test-Many", "x")
	req.Header.Add("X-Test-Many", "y")
	req.Header.Set("Content-Type", "application/octet-stream")
	req.InvocationID = "inv-echo"
	rec := mustInvoke(t, in, req)
	if rec.code != 201 {
		t.Fatalf("status %d, want 201", rec.code)
	}
	if !bytes.Equal(rec.body.Bytes(), body) {
		t.Fatalf("body of %d bytes differs from the %d sent", rec.body.Len(), len(body))
	}
	want := map[string]string{
		"X-Method":         "PUT",
		"X-Path":           "/echo",
		"X-Query":          "a=1&b=two%20words&status=201",
		"X-Host":           "127.0.0.1:8080",
		"X-Remote":         "127.0.0.1:54321",
		"X-Content-Length": strconv.Itoa(len(body)),
		"X-Invocation":     "inv-echo",
		"X-Got-One":        "1",
		"Content-Length":   strconv.Itoa(len(body)),
	}
	for k, v := range want {
		if got := rec.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := rec.header.Values("X-Got-Many"); strings.Join(got, ",") != "x,y" {
		t.Errorf("X-Got-Many = %q", got)
	}
	if got := rec.header.Values("X-Multi"); strings.Join(got, ",") != "a,b" {
		t.Errorf("X-Multi = %q", got)
	}

	// A body of unknown length, read in chunks.
	req = request("POST", "/echo", nil)
	req.Body = struct{ *bytes.Reader }{bytes.NewReader(body[:70000])}
	req.ContentLength = -1
	rec = mustInvoke(t, in, req)
	if !bytes.Equal(rec.body.Bytes(), body[:70000]) || rec.header.Get("X-Content-Length") != "-1" {
		t.Fatalf("unknown-length body: got %d bytes, X-Content-Length %q", rec.body.Len(), rec.header.Get("X-Content-Length"))
	}
}

func TestEchoExample(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{Function: "echo"}, echoMod.get(t)))
	req := request("POST", "/some/path?x=1", []byte(`{"hi":1}`))
	req.Header.Set("X-Demo", "yes")
	rec := mustInvoke(t, in, req)
	for _, want := range []string{`"method": "POST"`, `"path": "/some/path"`, `"x": [`, `"X-Demo": [`, `"body": "{\"hi\":1}"`} {
		if !strings.Contains(rec.body.String(), want) {
			t.Errorf("echo output lacks %s:\n%s", want, rec.body.String())
		}
	}
}

func TestWarmInstanceServesManyRequests(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{}, guestMod.get(t)))
	for i := 1; i <= 300; i++ {
		rec := mustInvoke(t, in, request("GET", "/count", nil))
		if rec.body.String() != strconv.Itoa(i) {
			t.Fatalf("request %d: got %q (a different instance state?)", i, rec.body.String())
		}
	}
}

func TestInstancesRunInParallel(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{}, guestMod.get(t))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		in := newInstance(t, tpl)
		wg.Go(func() {
			for i := range 50 {
				msg := fmt.Sprintf("g%d-%d", g, i)
				rec, err := invoke(t, in, request("POST", "/echo?m="+msg, []byte(msg)), 20*time.Second)
				if err == nil && (rec.body.String() != msg || rec.header.Get("X-Query") != "m="+msg) {
					err = fmt.Errorf("got %q / %q for %s", rec.body.String(), rec.header.Get("X-Query"), msg)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPanicIsCrashed(t *testing.T) {
	r := newRuntime(t)
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snap), func(t *testing.T) {
			tpl := prepare(t, r, runtime.Spec{}, guestMod.get(t))
			if snap {
				tpl = snapGuest(t)
			}
			in := newInstance(t, tpl)
			mustInvoke(t, in, request("GET", "/count", nil))
			rec, err := invoke(t, in, request("GET", "/panic?why=testing", nil), 20*time.Second)
			wantKind(t, err, runtime.Crashed, "panic: boom: testing")
			if rec.touched || len(rec.header) != 0 {
				t.Fatalf("a crashed invocation wrote a response: %d %q %v", rec.code, rec.body.String(), rec.header)
			}
			if runtime.Reusable(err) {
				t.Fatal("a crashed instance is reusable")
			}
			_ = in.Close()
			in2 := newInstance(t, tpl)
			if rec := mustInvoke(t, in2, request("GET", "/count", nil)); rec.body.String() != "1" {
				t.Fatalf("fresh instance answered %q", rec.body.String())
			}

			in3 := newInstance(t, tpl)
			_, err = invoke(t, in3, request("GET", "/exit", nil), 20*time.Second)
			wantKind(t, err, runtime.Crashed, "exited with code 3")
		})
	}
}

func TestInfiniteLoopTimesOut(t *testing.T) {
	r := newRuntime(t)
	for _, snap := range []bool{false, true} {
		tpl := prepare(t, r, runtime.Spec{}, guestMod.get(t))
		if snap {
			tpl = snapGuest(t)
		}
		for _, path := range []string{"/loop", "/sleep"} {
			t.Run(fmt.Sprintf("%s/snapshot=%v", path, snap), func(t *testing.T) {
				in := newInstance(t, tpl)
				start := time.Now()
				rec, err := invoke(t, in, request("GET", path, nil), 300*time.Millisecond)
				wantKind(t, err, runtime.TimedOut, "deadline")
				if rec.touched {
					t.Fatal("a timed-out invocation wrote a response")
				}
				t.Logf("%s stopped %v after the call began (deadline 300ms)", path, time.Since(start))
				_ = in.Close()
				in2 := newInstance(t, tpl)
				mustInvoke(t, in2, request("GET", "/count", nil))
			})
		}
	}
}

func TestSpecTimeoutWithoutDeadline(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{Timeout: 200 * time.Millisecond}, guestMod.get(t)))
	err := in.Invoke(context.Background(), request("GET", "/loop", nil), newRecorder())
	wantKind(t, err, runtime.TimedOut, "")
}

func TestOutOfMemory(t *testing.T) {
	r := newRuntime(t)
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snap), func(t *testing.T) {
			tpl := prepare(t, r, runtime.Spec{MemoryMB: 48}, guestMod.get(t))
			if snap {
				tpl = snapGuest(t)
			}
			in := newInstance(t, tpl)
			_, err := invoke(t, in, request("GET", "/alloc", nil), 30*time.Second)
			wantKind(t, err, runtime.OutOfMemory, "cap of 48 MB")
			t.Logf("error: %v", err)
			_ = in.Close()
			in2 := newInstance(t, tpl)
			mustInvoke(t, in2, request("GET", "/count", nil))
		})
	}
}

func TestClosedInstancesFreeMemory(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{}, guestMod.get(t))
	base := r.LinearMemoryBytes()
	for range 3 {
		in := newInstance(t, tpl)
		if r.LinearMemoryBytes() <= base {
			t.Fatalf("a live instance holds no memory: %d", r.LinearMemoryBytes())
		}
		_, err := invoke(t, in, request("GET", "/loop", nil), 100*time.Millisecond)
		wantKind(t, err, runtime.TimedOut, "")
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
		if got := r.LinearMemoryBytes(); got != base {
			t.Fatalf("after closing a timed-out instance %d bytes are held, want %d", got, base)
		}
	}
}

func TestResponseTooLarge(t *testing.T) {
	r, err := New(context.Background(), Config{CacheDir: sharedCache, MaxResponseBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	in := newInstance(t, prepare(t, r, runtime.Spec{}, guestMod.get(t)))
	rec := mustInvoke(t, in, request("GET", "/big?n=1048576", nil))
	if rec.body.Len() != 1<<20 {
		t.Fatalf("got %d bytes", rec.body.Len())
	}
	rec, err = invoke(t, in, request("GET", "/big?n=1048577", nil), 20*time.Second)
	wantKind(t, err, runtime.BadResponse, "over the limit")
	if rec.touched {
		t.Fatal("an oversized response was written")
	}
}

func TestLogsCarryInvocationID(t *testing.T) {
	r := newRuntime(t)
	sink := &logSink{}
	in := newInstance(t, prepare(t, r, runtime.Spec{Logs: sink}, guestMod.get(t)))
	for i := range 3 {
		req := request("GET", fmt.Sprintf("/log?msg=m%d", i), nil)
		req.InvocationID = fmt.Sprintf("inv-%d", i)
		rec := mustInvoke(t, in, req)
		if rec.code != http.StatusNoContent {
			t.Fatalf("status %d", rec.code)
		}
	}
	eventually(t, 10*time.Second, func() error {
		for i := range 3 {
			id := fmt.Sprintf("inv-%d", i)
			for _, want := range []logLine{
				{id, "stdout", fmt.Sprintf("out: m%d", i)},
				{id, "stderr", fmt.Sprintf("err: m%d", i)},
				{id, "stdout", "partial"},
			} {
				if !sink.has(want) {
					return fmt.Errorf("missing log line %+v; have %+v", want, sink.snapshot())
				}
			}
		}
		return nil
	})
}

func TestLongLinesAreSplit(t *testing.T) {
	sink := &logSink{}
	pump := newLogPump(16)
	id := "inv"
	w := &lineWriter{pump: pump, sink: sink, stream: "stderr", id: &id}
	long := strings.Repeat("x", maxLine*2+10)
	fmt.Fprintf(w, "%s\nshort\r\n", long)
	pump.close()
	if len(sink.lines) != 4 {
		t.Fatalf("got %d lines", len(sink.lines))
	}
	for i, n := range []int{maxLine, maxLine, 10} {
		if len(sink.lines[i].line) != n {
			t.Errorf("line %d has %d bytes, want %d", i, len(sink.lines[i].line), n)
		}
	}
	if sink.lines[3].line != "short" {
		t.Errorf("last line %q", sink.lines[3].line)
	}
}

func TestEnvAndRandomness(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{Env: map[string]string{"GREETING": "hej"}}, guestMod.get(t))
	a, b := newInstance(t, tpl), newInstance(t, tpl)
	if rec := mustInvoke(t, a, request("GET", "/env?name=GREETING", nil)); rec.body.String() != "hej" {
		t.Fatalf("GREETING = %q", rec.body.String())
	}
	ra := mustInvoke(t, a, request("GET", "/rand", nil)).body.String()
	rb := mustInvoke(t, b, request("GET", "/rand", nil)).body.String()
	if ra == rb || len(ra) != 32 {
		t.Fatalf("two instances drew the same random bytes %q", ra)
	}
}

func TestTemplateCloseKeepsInstances(t *testing.T) {
	r := newRuntime(t)
	spec := runtime.Spec{Function: "f", Version: 1, Runtime: runtime.Wasm}
	tpl, err := r.Prepare(context.Background(), &spec, guestMod.get(t))
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, tpl)
	if err := tpl.Close(); err != nil {
		t.Fatal(err)
	}
	mustInvoke(t, in, request("GET", "/count", nil))
	if _, err := tpl.NewInstance(context.Background()); err == nil {
		t.Fatal("NewInstance on a closed template succeeded")
	}
}

func TestCompilationCache(t *testing.T) {
	dir := t.TempDir()
	prep := func() time.Duration {
		r, err := New(context.Background(), Config{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(context.Background())
		start := time.Now()
		spec := runtime.Spec{Function: "cgi", Version: 1, Runtime: runtime.WasmCGI}
		tpl, err := r.Prepare(context.Background(), &spec, exampleCGIMod.get(t))
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		defer tpl.Close()
		in, err := tpl.NewInstance(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		if rec := mustInvoke(t, in, request("GET", "/", nil)); !strings.Contains(rec.body.String(), "Hello from a CGI function!") {
			t.Fatalf("got %q", rec.body.String())
		}
		return took
	}
	first := prep()
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir is empty after Prepare (%v)", err)
	}
	second := prep()
	t.Logf("Prepare of examples/cgi (%d KB): %v with an empty cache, %v from the disk cache", len(exampleCGIMod.get(t))>>10, first, second)
}
