package lambda

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// TestGoLambda runs an unmodified aws-lambda-go bootstrap, shipped as a single
// file and as a .zip, through HTTP events, raw events and function errors.
func TestGoLambda(t *testing.T) {
	needBuilds(t)
	bin := readFile(t, goLambdaPath)
	for _, tc := range []struct {
		name string
		code []byte
	}{
		{"single-file", bin},
		{"zip", zipOf(t, map[string]string{"bootstrap": string(bin), "data/readme.txt": "x"}, 0o755)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logSink{}
			in := start(t, newTestRuntime(t), testSpec(runtime.Lambda, "golambda", logs), tc.code)

			// HTTP: method, path, query, header, cookies and body reach the
			// handler; its status, headers, cookies and body come back.
			w, err := invoke(t, in, call{
				method: http.MethodPost, path: "/items/7", query: "a=1&b=x&b=y",
				header: http.Header{"X-Test": {"yes"}, "Cookie": {"c1=v1; c2=v2"}, "Content-Type": {"text/plain"}},
				body:   "hello body",
			})
			mustOK(t, w, err)
			if w.Code != 201 || w.Header().Get("X-Handled-By") != "golambda" {
				t.Fatalf("status %d headers %v body %s", w.Code, w.Header(), w.Body)
			}
			if got := w.Header().Values("Set-Cookie"); strings.Join(got, ",") != "a=1,b=2" {
				t.Errorf("Set-Cookie = %v", got)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			want := map[string]any{"method": "POST", "path": "/items/7", "rawq": "a=1&b=x&b=y", "header": "yes",
				"cookies": "c1=v1|c2=v2", "body": "hello body", "source": "192.0.2.7"}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if q, _ := got["query"].(map[string]any); q["a"] != "1" || q["b"] != "x,y" {
				t.Errorf("query = %v", got["query"])
			}
			id, _ := got["id"].(string)
			if !strings.HasPrefix(id, "inv-") {
				t.Errorf("request id = %q, want the invocation id", id)
			}
			// The handler's stdout line is tagged with its invocation.
			eventually(t, 5e9, func() error {
				if l, ok := logs.find("handling POST /items/7"); !ok || l.id != id || l.stream != "stdout" {
					return errorf("log line %+v found=%v, want id %s", l, ok, id)
				}
				return nil
			})

			// A binary body travels base64-encoded, and back.
			w, err = invoke(t, in, call{method: "PUT", path: "/bin", body: "\x00\xff\x01",
				header: http.Header{"Content-Type": {"application/octet-stream"}}})
			mustOK(t, w, err)
			if !strings.Contains(w.Body.String(), `"body":"b64:\u0000\ufffd\u0001"`) {
				t.Errorf("binary request body: %s", w.Body)
			}
			w, err = invoke(t, in, call{path: "/binary"})
			mustOK(t, w, err)
			if w.Body.String() != "\x00\x01\x02\xff" {
				t.Errorf("binary response %q", w.Body.String())
			}

			// A plain result is a 200 application/json body.
			w, err = invoke(t, in, call{path: "/plain"})
			mustOK(t, w, err)
			if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != `"just a string"` {
				t.Errorf("plain: %d %v %s", w.Code, w.Header(), w.Body)
			}

			// Environment and context.
			w, err = invoke(t, in, call{path: "/env"})
			mustOK(t, w, err)
			var env map[string]string
			_ = json.Unmarshal(w.Body.Bytes(), &env)
			for k, v := range map[string]string{
				"AWS_LAMBDA_FUNCTION_NAME": "golambda", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
				"AWS_LAMBDA_FUNCTION_VERSION": "3", "AWS_REGION": "local", "TZ": "UTC", "GREETING": "hi",
				"LAMBDA_TASK_ROOT": in.t.dir, "remaining_ok": "true",
				"arn": "arn:aws:lambda:local:000000000000:function:golambda",
			} {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}

			// A raw event passes through as JSON, and its result comes back;
			// a retried event may reuse its invocation id.
			for range 2 {
				w, err = invoke(t, in, call{raw: true, body: `{"op":"add","a":2,"b":40}`, id: "retried-id"})
				mustOK(t, w, err)
				if w.Code != 200 || w.Body.String() != `{"sum":42}` || w.Header().Get("Content-Type") != "application/json" {
					t.Errorf("raw: %d %s", w.Code, w.Body)
				}
			}

			// A handler error is a FunctionError with the handler's type and
			// message, and the instance keeps serving.
			for _, c := range []call{{path: "/fail"}, {raw: true, body: `{"op":"fail"}`}} {
				_, err = invoke(t, in, c)
				re := wantKind(t, err, runtime.FunctionError, "bad input")
				if re.Type != "BadInput" {
					t.Errorf("error type %q, want BadInput", re.Type)
				}
				if !runtime.Reusable(err) {
					t.Errorf("a function error must leave the instance reusable")
				}
				w, err = invoke(t, in, call{raw: true, body: `{"op":"add","a":1,"b":1}`})
				mustOK(t, w, err)
				if w.Body.String() != `{"sum":2}` {
					t.Errorf("after error: %s", w.Body)
				}
			}
		})
	}
}
