package wasm

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

func TestCGIExample(t *testing.T) {
	r := newRuntime(t)
	in := newInstance(t, prepare(t, r, runtime.Spec{Runtime: runtime.WasmCGI}, exampleCGIMod.get(t)))
	rec := mustInvoke(t, in, request("GET", "/a/b?x=1", nil))
	want := "Hello from a CGI function!\nPATH_INFO=/a/b\nQUERY_STRING=x=1\n"
	if rec.code != 200 || rec.body.String() != want || rec.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("got %d %q %v", rec.code, rec.body.String(), rec.header)
	}
}

func TestCGIEnvironment(t *testing.T) {
	r := newRuntime(t)
	sink := &logSink{}
	spec := runtime.Spec{Runtime: runtime.WasmCGI, Env: map[string]string{"GREETING": "hej", "PATH_INFO": "spoofed"}, Logs: sink}
	in := newInstance(t, prepare(t, r, spec, cgiMod.get(t)))
	req := request("POST", "/env?q=1&r=two", []byte("abc"))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Add("X-Foo-Bar", "one")
	req.Header.Add("X-Foo-Bar", "two")
	req.Header.Set("Proxy", "http://evil")
	req.InvocationID = "inv-cgi"
	rec := mustInvoke(t, in, req)
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(rec.body.String()), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	want := map[string]string{
		"GATEWAY_INTERFACE":      "CGI/1.1",
		"SERVER_PROTOCOL":        "HTTP/1.1",
		"SERVER_NAME":            "127.0.0.1",
		"SERVER_PORT":            "8080",
		"REQUEST_METHOD":         "POST",
		"SCRIPT_NAME":            "/fn/test",
		"PATH_INFO":              "/env",
		"QUERY_STRING":           "q=1&r=two",
		"REQUEST_URI":            "/fn/test/env?q=1&r=two",
		"CONTENT_TYPE":           "text/plain",
		"CONTENT_LENGTH":         "3",
		"REMOTE_ADDR":            "127.0.0.1",
		"HTTP_X_FOO_BAR":         "one, two",
		"X_NIMBUS_INVOCATION_ID": "inv-cgi",
		"GREETING":               "hej",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["HTTP_PROXY"]; ok {
		t.Error("HTTP_PROXY was set from a request header")
	}

	// The body arrives on stdin; stderr goes to the log.
	in2 := newInstance(t, prepare(t, r, spec, cgiMod.get(t)))
	body := bytes.Repeat([]byte("0123456789"), 100_000)
	rec = mustInvoke(t, in2, request("PUT", "/stdin", body))
	if !bytes.Equal(rec.body.Bytes(), body) || rec.header.Get("X-Extra") != "yes" {
		t.Fatalf("stdin echo: %d bytes, headers %v", rec.body.Len(), rec.header)
	}
	req = request("GET", "/crash", nil)
	req.InvocationID = "inv-crash"
	_, err := invoke(t, in2, req, 20*time.Second)
	wantKind(t, err, runtime.Crashed, "panic: cgi crashed")
	eventually(t, 10*time.Second, func() error {
		if !sink.has(logLine{"inv-crash", "stderr", "about to fail"}) {
			return errorf("stderr line missing: %+v", sink.snapshot())
		}
		return nil
	})
}

func TestCGIResponses(t *testing.T) {
	r := newRuntime(t)
	tpl := prepare(t, r, runtime.Spec{Runtime: runtime.WasmCGI}, cgiMod.get(t))
	in := newInstance(t, tpl)
	for _, tc := range []struct {
		path   string
		status int
		header string
		body   string
		kind   runtime.Kind
		msg    string
	}{
		{path: "/status", status: 404, body: "nothing here"},
		{path: "/redirect", status: 302, header: "https://example.org/"},
		{path: "/bad-colon", kind: runtime.BadResponse, msg: `"this is not a header" has no colon`},
		{path: "/bad-status", kind: runtime.BadResponse, msg: `Status "abc"`},
		{path: "/no-blank", kind: runtime.BadResponse, msg: "no blank line"},
		{path: "/nothing", kind: runtime.BadResponse, msg: "wrote nothing"},
		{path: "/crash", kind: runtime.Crashed, msg: "exited with code 2"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec, err := invoke(t, in, request("GET", tc.path, nil), 20*time.Second)
			if tc.kind != 0 {
				wantKind(t, err, tc.kind, tc.msg)
				if rec.touched {
					t.Fatal("a failed invocation wrote a response")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rec.code != tc.status || rec.body.String() != tc.body || (tc.header != "" && rec.header.Get("Location") != tc.header) {
				t.Fatalf("got %d %q %v", rec.code, rec.body.String(), rec.header)
			}
		})
	}
	_, err := invoke(t, in, request("GET", "/loop", nil), 300*time.Millisecond)
	wantKind(t, err, runtime.TimedOut, "")
	// The same handle keeps serving: every invocation is a fresh instance.
	if rec := mustInvoke(t, in, request("GET", "/status", nil)); rec.code != 404 {
		t.Fatalf("after a timeout: %d", rec.code)
	}
}

func TestParseCGI(t *testing.T) {
	for _, tc := range []struct {
		name   string
		out    string
		status int
		header http.Header
		body   string
		err    string
	}{
		{"minimal", "Content-Type: text/plain\n\nhi", 200, http.Header{"Content-Type": {"text/plain"}}, "hi", ""},
		{"crlf", "Content-Type: text/plain\r\nX-A: 1\r\n\r\nhi\r\n", 200, http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}, "hi\r\n", ""},
		{"status", "Status: 404 Not Found\nContent-Type: text/plain\n\nmissing", 404, http.Header{"Content-Type": {"text/plain"}}, "missing", ""},
		{"bare status", "Status: 201\n\n", 201, http.Header{}, "", ""},
		{"location", "Location: /elsewhere\n\n", 302, http.Header{"Location": {"/elsewhere"}}, "", ""},
		{"location with status", "Status: 301 Moved\nLocation: /x\n\n", 301, http.Header{"Location": {"/x"}}, "", ""},
		{"repeated header", "Set-Cookie: a=1\nset-cookie: b=2\n\n", 200, http.Header{"Set-Cookie": {"a=1", "b=2"}}, "", ""},
		{"spaces", "X-A:   padded  \n\n", 200, http.Header{"X-A": {"padded"}}, "", ""},
		{"empty value", "X-A:\n\n", 200, http.Header{"X-A": {""}}, "", ""},
		{"body with blank lines", "A: b\n\nline1\n\nline3", 200, http.Header{"A": {"b"}}, "line1\n\nline3", ""},
		{"no headers", "\nbody", 200, http.Header{}, "body", ""},
		{"empty", "", 0, nil, "", "wrote nothing"},
		{"no blank line", "Content-Type: text/plain\n", 0, nil, "", "no blank line"},
		{"no newline at all", "Hello world", 0, nil, "", "no blank line"},
		{"body without headers", "Hello world\n\n", 0, nil, "", `"Hello world" has no colon`},
		{"empty name", ": value\n\n", 0, nil, "", "no name"},
		{"bad name", "Bad Name: v\n\n", 0, nil, "", "not a valid HTTP field name"},
		{"bad status", "Status: OK\n\n", 0, nil, "", "three-digit"},
		{"status out of range", "Status: 999 Huh\n\n", 0, nil, "", "three-digit"},
		{"status too long", "Status: 2000\n\n", 0, nil, "", "three-digit"},
		{"two statuses", "Status: 200\nStatus: 404\n\n", 0, nil, "", "more than one Status"},
		{"huge header", "X: " + strings.Repeat("a", maxCGIHeader+10) + "\n\n", 0, nil, "", "longer than"},
		{"cr in value", "X: a\rb\n\n", 0, nil, "", "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := parseCGI([]byte(tc.out))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.status != tc.status || string(resp.body) != tc.body || !reflect.DeepEqual(resp.header, tc.header) {
				t.Fatalf("got %d %v %q; want %d %v %q", resp.status, resp.header, resp.body, tc.status, tc.header, tc.body)
			}
		})
	}
}

func FuzzParseCGI(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/plain\n\nhi",
		"Status: 404 Not Found\r\nX: y\r\n\r\nbody",
		"Location: /x\n\n",
		"nonsense",
		"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		resp, err := parseCGI(out)
		if err != nil {
			return
		}
		if resp.status < 100 || resp.status > 599 {
			t.Fatalf("status %d accepted", resp.status)
		}
		if len(resp.body) > len(out) || !bytes.HasSuffix(out, resp.body) {
			t.Fatal("body is not the tail of the output")
		}
		for name, values := range resp.header {
			if name == "" || strings.ContainsAny(name, " :\r\n") {
				t.Fatalf("bad header name %q", name)
			}
			for _, v := range values {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %s value %q has a control character", name, v)
				}
			}
		}
	})
}
