package lambda

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

const pyHandler = `import json, os, time
import helper

def handler(event, context):
    path = event.get("rawPath")
    if path is None:
        return {"got": event, "fn": context.function_name}
    if path == "/boom":
        raise ValueError("kaboom " + helper.WORD)
    if path == "/sleep":
        time.sleep(60)
    if path == "/exit":
        os._exit(7)
    print("py handling", path)
    with open("/tmp/scratch", "w") as f:  # Lambda code writes /tmp by name
        f.write("ok")
    return {
        "statusCode": 202,
        "headers": {"content-type": "application/json", "x-remaining": str(context.get_remaining_time_in_millis() > 0)},
        "cookies": ["k=v"],
        "body": json.dumps({"method": event["requestContext"]["http"]["method"], "query": event.get("queryStringParameters"),
                            "body": event.get("body"), "id": context.aws_request_id, "mem": context.memory_limit_in_mb,
                            "greeting": os.environ.get("GREETING"), "word": helper.WORD,
                            "tmp": open("/tmp/scratch").read()}),
    }
`

const pyHelper = "WORD = 'from-helper'\n"

const nodeHandler = `const helper = require('./helper');
exports.handler = async (event, context) => {
  const path = event.rawPath;
  if (path === undefined) return { got: event, fn: context.functionName };
  if (path === '/boom') throw new TypeError('kaboom ' + helper.WORD);
  if (path === '/sleep') await new Promise((r) => setTimeout(r, 60000));
  if (path === '/exit') process.exit(7);
  console.log('node handling', path);
  require('fs').writeFileSync('/tmp/scratch', 'ok'); // Lambda code writes /tmp by name
  return {
    statusCode: 202,
    headers: { 'content-type': 'application/json', 'x-remaining': String(context.getRemainingTimeInMillis() > 0) },
    cookies: ['k=v'],
    body: JSON.stringify({ method: event.requestContext.http.method, query: event.queryStringParameters, body: event.body,
      id: context.awsRequestId, mem: context.memoryLimitInMB, greeting: process.env.GREETING, word: helper.WORD,
      tmp: require('fs').readFileSync('/tmp/scratch', 'utf8') }),
  };
};
`

const nodeHelper = "exports.WORD = 'from-helper';\n"

// nodeCallback uses the callback form, and answers after the handler returned.
const nodeCallback = `exports.handler = (event, context, callback) => {
  const path = event.rawPath;
  if (path === undefined) return setTimeout(() => callback(null, { got: event, fn: context.functionName }), 5);
  if (path === '/boom') return callback(new TypeError('kaboom from-helper'));
  console.log('node handling', path);
  setTimeout(() => callback(null, { statusCode: 202, headers: { 'content-type': 'application/json', 'x-remaining': 'True' },
    cookies: ['k=v'], body: JSON.stringify({ method: event.requestContext.http.method, query: event.queryStringParameters,
      body: event.body, id: context.awsRequestId, mem: context.memoryLimitInMB, greeting: process.env.GREETING, word: 'from-helper' }) }), 5);
};
`

type managedCase struct {
	name, runtime, interp string
	code                  []byte
	errType, logPrefix    string
}

func managedCases(t *testing.T) []managedCase {
	return []managedCase{
		{"python", runtime.Python3, "python3",
			zipOf(t, map[string]string{"handler.py": pyHandler, "helper.py": pyHelper}, 0o644), "ValueError", "py handling"},
		{"node", runtime.NodeJS, "node",
			zipOf(t, map[string]string{"handler.js": nodeHandler, "helper.js": nodeHelper}, 0o644), "TypeError", "node handling"},
		{"node-callback", runtime.NodeJS, "node", []byte(nodeCallback), "TypeError", "node handling"},
	}
}

// TestManagedRoundTrip sends HTTP and raw events through Python and Node
// handlers, then a thrown error, and checks the instance keeps serving.
func TestManagedRoundTrip(t *testing.T) {
	for _, tc := range managedCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			needInterp(t, tc.interp)
			logs := &logSink{}
			in := start(t, newTestRuntime(t), testSpec(tc.runtime, "managed", logs), tc.code)

			w, err := invoke(t, in, call{method: "POST", path: "/x", query: "q=1&q=2", body: `{"n":1}`,
				header: http.Header{"Content-Type": {"application/json"}}})
			mustOK(t, w, err)
			if w.Code != 202 || w.Header().Get("X-Remaining") != "True" && w.Header().Get("X-Remaining") != "true" ||
				w.Header().Get("Set-Cookie") != "k=v" {
				t.Fatalf("status %d headers %v body %s", w.Code, w.Header(), w.Body)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			want := map[string]any{"method": "POST", "body": `{"n":1}`, "mem": "256", "greeting": "hi", "word": "from-helper"}
			if strings.Contains(string(tc.code), "/tmp/scratch") {
				want["tmp"] = "ok"
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if q, _ := got["query"].(map[string]any); q["q"] != "1,2" {
				t.Errorf("query = %v", got["query"])
			}
			id, _ := got["id"].(string)
			eventually(t, 5*time.Second, func() error {
				if l, ok := logs.find(tc.logPrefix + " /x"); !ok || l.id != id {
					return errorf("log line %+v found=%v, want id %s", l, ok, id)
				}
				return nil
			})

			w, err = invoke(t, in, call{raw: true, body: `{"k":[1,2]}`})
			mustOK(t, w, err)
			if w.Body.String() != `{"got": {"k": [1, 2]}, "fn": "managed"}` && w.Body.String() != `{"got":{"k":[1,2]},"fn":"managed"}` {
				t.Errorf("raw result %s", w.Body)
			}

			_, err = invoke(t, in, call{path: "/boom"})
			re := wantKind(t, err, runtime.FunctionError, "kaboom from-helper")
			if re.Type != tc.errType {
				t.Errorf("error type %q, want %q", re.Type, tc.errType)
			}
			w, err = invoke(t, in, call{raw: true, body: `{"again":true}`})
			mustOK(t, w, err)
			if !strings.Contains(w.Body.String(), "again") {
				t.Errorf("after error: %s", w.Body)
			}
		})
	}
}

// TestManagedTimeoutAndExit: a handler sleeping past its deadline times out
// and its process is killed; one that exits mid-invoke is Crashed.
func TestManagedTimeoutAndExit(t *testing.T) {
	for _, tc := range managedCases(t)[:2] {
		t.Run(tc.name, func(t *testing.T) {
			needInterp(t, tc.interp)
			rt := newTestRuntime(t)

			in := start(t, rt, testSpec(tc.runtime, "slow", nil), tc.code)
			_, err := invoke(t, in, call{path: "/sleep", timeout: 700 * time.Millisecond})
			wantKind(t, err, runtime.TimedOut, "timed out")
			// Gone even before the caller closes it.
			waitGone(t, in)
			_, err = invoke(t, in, call{raw: true, body: "{}"})
			wantKind(t, err, runtime.Crashed, "no longer usable")

			in = start(t, rt, testSpec(tc.runtime, "exits", nil), tc.code)
			_, err = invoke(t, in, call{path: "/exit"})
			wantKind(t, err, runtime.Crashed, "exit status 7")
			waitGone(t, in)
		})
	}
}

// TestManagedBadCode: syntax errors are refused at Prepare with the
// interpreter's message; errors Prepare cannot see fail the start through
// /init/error with the same clarity.
func TestManagedBadCode(t *testing.T) {
	type bad struct {
		name, runtime, interp string
		handler               string
		files                 map[string]string
		prepare, start        string // expected error text, one of them empty
	}
	for _, tc := range []bad{
		{"py-syntax", runtime.Python3, "python3", "", map[string]string{"handler.py": "def handler(e, c):\n    x = 1\n    return (\n"},
			"handler.py line 3", ""},
		{"py-syntax-in-import", runtime.Python3, "python3", "", map[string]string{"handler.py": "import other\ndef handler(e, c):\n    return 1\n",
			"other.py": "x = 1\ny = = 2\n"}, "", "Runtime.UserCodeSyntaxError: Syntax error in module 'handler': SyntaxError: invalid syntax (other.py line 2)"},
		{"py-no-handler", runtime.Python3, "python3", "", map[string]string{"handler.py": "def other(e, c):\n    return 1\n"},
			"", "Runtime.HandlerNotFound: Handler 'handler' missing on module 'handler'"},
		{"py-import-raises", runtime.Python3, "python3", "", map[string]string{"handler.py": "raise RuntimeError('no config')\n"},
			"", "RuntimeError: no config"},
		{"py-missing-module", runtime.Python3, "python3", "", map[string]string{"handler.py": "import not_there_at_all\n"},
			"", "Runtime.ImportModuleError: Unable to import module 'handler': No module named 'not_there_at_all'"},
		{"py-missing-file", runtime.Python3, "python3", "app.main", map[string]string{"handler.py": "def main(e, c): pass\n"},
			"needs the file app.py", ""},
		{"bad-handler-name", runtime.Python3, "python3", "../etc.passwd", map[string]string{"handler.py": ""},
			"handler \"../etc.passwd\" is invalid", ""},
		{"node-syntax", runtime.NodeJS, "node", "", map[string]string{"handler.js": "exports.handler = async () => {\n  return 1;\n}}\n"},
			"SyntaxError: Unexpected token '}' (handler.js line 3)", ""},
		{"node-syntax-in-require", runtime.NodeJS, "node", "", map[string]string{"handler.js": "require('./other');\nexports.handler = async () => 1;\n",
			"other.js": "let x = ;\n"}, "", "Runtime.UserCodeSyntaxError: SyntaxError: Unexpected token ';' (other.js line 1)"},
		{"node-no-handler", runtime.NodeJS, "node", "", map[string]string{"handler.js": "exports.other = async () => 1;\n"},
			"", "Runtime.HandlerNotFound: handler.handler is undefined or not exported"},
		{"node-missing-require", runtime.NodeJS, "node", "", map[string]string{"handler.js": "require('left-pad');\n"},
			"", "Cannot find module 'left-pad'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			needInterp(t, tc.interp)
			rt := newTestRuntime(t)
			spec := testSpec(tc.runtime, "bad", nil)
			spec.Handler = tc.handler
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tpl, err := rt.Prepare(ctx, spec, zipOf(t, tc.files, 0o644))
			if tc.prepare != "" {
				wantKind(t, err, runtime.BadCode, tc.prepare)
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			inst, err := tpl.NewInstance(ctx)
			if err == nil {
				_ = inst.Close()
				t.Fatal("NewInstance succeeded")
			}
			wantKind(t, err, runtime.StartFailed, tc.start)
		})
	}
}

// TestManagedSingleFile deploys a lone handler file under a custom handler name.
func TestManagedSingleFile(t *testing.T) {
	needInterp(t, "python3")
	spec := testSpec(runtime.Python3, "single", nil)
	spec.Handler = "app.main"
	in := start(t, newTestRuntime(t), spec, []byte("def main(event, context):\n    return {'hello': event.get('name')}\n"))
	w, err := invoke(t, in, call{raw: true, body: `{"name":"nimbus"}`})
	mustOK(t, w, err)
	if w.Body.String() != `{"hello": "nimbus"}` {
		t.Errorf("result %s", w.Body)
	}
	// Through HTTP, a dict without statusCode is a 200 JSON answer.
	w, err = invoke(t, in, call{path: "/"})
	mustOK(t, w, err)
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != `{"hello": null}` {
		t.Errorf("http result %d %v %s", w.Code, w.Header(), w.Body)
	}
}
