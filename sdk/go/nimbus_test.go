//go:build !wasip1

package nimbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHeaderListRoundTrip(t *testing.T) {
	in := http.Header{
		"Content-Type": {"text/plain"},
		"X-Many":       {"a", "b", ""},
		"X-Empty":      {""},
	}
	b := appendHeaderList(nil, in)
	out := http.Header{}
	if err := parseHeaderList(b, out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %v, want %v", out, in)
	}
	empty := appendHeaderList(nil, nil)
	if string(empty) != "\x00\x00\x00\x00" {
		t.Fatalf("empty list encodes as %q", empty)
	}
}

func TestHeaderListSpareSlots(t *testing.T) {
	// Names in non-canonical case and a name repeated apart from its first
	// entry still land on one canonical key, in order.
	list := []byte{3, 0, 0, 0}
	for _, kv := range [][2]string{{"x-many", "a"}, {"Accept", "*/*"}, {"X-Many", "b"}} {
		list = append(list, byte(len(kv[0])), 0, 0, 0, byte(len(kv[1])), 0, 0, 0)
		list = append(list, kv[0]+kv[1]...)
	}
	h := http.Header{}
	spare, err := parseHeaderListSpare(list, h, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{"X-Many": {"a", "b"}, "Accept": {"*/*"}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got %v, want %v", h, want)
	}
	if len(spare) != 1 {
		t.Fatalf("got %d spare slots, want 1", len(spare))
	}
	h["X-Id"] = append(spare[:0], "id")
	h["Accept"] = append(h["Accept"], "text/html") // must not overwrite another value
	if !reflect.DeepEqual(h["X-Many"], []string{"a", "b"}) || h["X-Id"][0] != "id" {
		t.Fatalf("slots overlap: %v", h)
	}
	if n := headerCount(list); n != 3 {
		t.Fatalf("headerCount = %d, want 3", n)
	}
}

func TestHeaderListRejectsMalformed(t *testing.T) {
	good := appendHeaderList(nil, http.Header{"A": {"b"}})
	for name, b := range map[string][]byte{
		"short":         good[:3],
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 'x'),
		"count too big": append([]byte{2, 0, 0, 0}, good[4:]...),
		"huge length":   {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
	} {
		if err := parseHeaderList(b, http.Header{}); err == nil {
			t.Errorf("%s: accepted %q", name, b)
		}
	}
}

func TestSourceEmbedsSDK(t *testing.T) {
	for _, name := range []string{"go.mod", "doc.go", "abi_wasip1.go", "handle_wasip1.go", "handle_other.go", "headers.go"} {
		if _, err := fs.Stat(Source, name); err != nil {
			t.Errorf("Source lacks %s: %v", name, err)
		}
	}
	mod, _ := fs.ReadFile(Source, "go.mod")
	if !strings.Contains(string(mod), "module github.com/nimbusfn/nimbus/sdk/go") {
		t.Errorf("embedded go.mod: %s", mod)
	}
}

func TestHandleServesHTTP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	t.Setenv("NIMBUS_ADDR", addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hi "+r.URL.Query().Get("name")+" "+InvocationID(r))
		}))
	}()
	var body []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/?name=Ada", nil)
		req.Header.Set(InvocationIDHeader, "inv-1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if string(body) != "hi Ada inv-1" {
		t.Fatalf("got %q", body)
	}
	// SIGTERM stops the server and Handle returns.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Handle did not return after SIGTERM")
	}
}

func TestParseHead(t *testing.T) {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(0xffffffffffffffff)) // -1: unknown length
	for _, s := range []string{"POST", "/a/b", "x=1", "example.com", "10.0.0.1:5", "inv-1"} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	list := appendHeaderList(nil, http.Header{"Accept": {"*/*"}})
	b = append(b, list...)
	h, ok := parseHead(b)
	if !ok {
		t.Fatal("parseHead refused a well-formed head")
	}
	got := []string{string(h.method), string(h.path), string(h.query), string(h.authority), string(h.remoteAddr), string(h.invocationID)}
	want := []string{"POST", "/a/b", "x=1", "example.com", "10.0.0.1:5", "inv-1"}
	if !slices.Equal(got, want) || h.contentLength != -1 || !bytes.Equal(h.headers, list) {
		t.Fatalf("parseHead = %q %d %q", got, h.contentLength, h.headers)
	}
	for n := range len(b) - len(list) {
		if _, ok := parseHead(b[:n]); ok {
			t.Fatalf("parseHead accepted a head cut at %d bytes", n)
		}
	}
	var last string
	if s := cached([]byte("/a"), &last); s != "/a" || last != "/a" {
		t.Fatalf("cached = %q, last %q", s, last)
	}
	if methodString([]byte("GET")) != "GET" || methodString([]byte("BREW")) != "BREW" {
		t.Fatal("methodString")
	}
}
