package wasm

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"testing"
)

func TestWriteResponseHeaders(t *testing.T) {
	list := appendHeaderList(nil, map[string][]string{
		"content-type":   {"text/plain"},
		"X-Multi":        {"a", "b"},
		"Set-Cookie":     {"c=1"},
		"Content-Length": {"999"}, // the host computes its own
	})
	w := httptest.NewRecorder()
	w.Header()["Set-Cookie"] = []string{"gw=1"} // set before the guest's answer
	spare := addHeaders(w.Header(), string(list))
	writeBody(w, http.MethodGet, 201, []byte("hello"), spare)
	want := http.Header{
		"Content-Type":   {"text/plain"},
		"X-Multi":        {"a", "b"},
		"Set-Cookie":     {"gw=1", "c=1"},
		"Content-Length": {"5"},
	}
	if !reflect.DeepEqual(w.Header(), want) {
		t.Fatalf("headers = %v, want %v", w.Header(), want)
	}
	if w.Code != 201 || w.Body.String() != "hello" {
		t.Fatalf("answer = %d %q", w.Code, w.Body.String())
	}
	// Appending to one value must not change another.
	w.Header()["X-Multi"] = append(w.Header()["X-Multi"], "c")
	if got := w.Header()["Content-Type"]; len(got) != 1 || got[0] != "text/plain" {
		t.Fatalf("Content-Type changed to %q", got)
	}

	w = httptest.NewRecorder()
	writeBody(w, http.MethodHead, 200, nil, nil)
	if got := w.Header().Get("Content-Length"); got != "0" {
		t.Fatalf("HEAD Content-Length = %q", got)
	}
	w = httptest.NewRecorder()
	writeBody(w, http.MethodGet, 204, []byte("x"), addHeaders(w.Header(), string(appendHeaderList(nil, nil))))
	if _, ok := w.Header()["Content-Length"]; ok || w.Body.Len() != 0 {
		t.Fatalf("204 answer has Content-Length %q or a body %q", w.Header()["Content-Length"], w.Body.String())
	}
}

// TestHeaderListCanonicalAndGrouped: whatever map a caller builds, the list
// a guest receives has canonical names with each name's entries adjacent
// (docs/ABI.md section 3), values in order and none lost.
func TestHeaderListCanonicalAndGrouped(t *testing.T) {
	for _, h := range []map[string][]string{
		{"Accept": {"*/*"}, "X-Many": {"a", "b"}, "Traceparent": {"00-x"}},
		{"x-many": {"a"}, "accept": {"*/*"}, "X-MANY": {"b", "c"}, "User-Agent": {"ua"}},
		{"x_under": {"u"}, "bad name": {"v"}, "Accept": {"*/*"}}, // textproto leaves an invalid name as it is
	} {
		var names []string
		got := map[string][]string{}
		walkHeaderList(appendHeaderList(nil, h), func(name, value []byte) {
			n := string(name)
			if len(names) == 0 || names[len(names)-1] != n {
				names = append(names, n)
			}
			got[n] = append(got[n], string(value))
		})
		if len(names) != len(got) {
			t.Errorf("%v: names %v are not grouped", h, names)
		}
		want := map[string][]string{}
		for name, values := range h {
			c := http.CanonicalHeaderKey(name)
			want[c] = append(want[c], values...)
		}
		for name, values := range got {
			if http.CanonicalHeaderKey(name) != name {
				t.Errorf("%v: name %q is not canonical", h, name)
			}
			w := want[name]
			slices.Sort(w)
			slices.Sort(values)
			if !slices.Equal(values, w) {
				t.Errorf("%v: %s = %v, want %v", h, name, values, w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%v: got names %v, want %v", h, got, want)
		}
	}
}
