// Package nimbus is the guest SDK for Go functions on Nimbus: it turns a plain
// http.Handler into a Nimbus function.
//
// A function is a main package whose main calls Handle:
//
//	func main() {
//		nimbus.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//			fmt.Fprintf(w, "Hello, %s!", r.URL.Query().Get("name"))
//		}))
//	}
//
// Built as a WebAssembly reactor it runs on the wasm runtime:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o fn.wasm .
//
// There the request arrives through the Nimbus ABI v1 (docs/ABI.md in the
// Nimbus repository): r.Method, r.URL.Path (the sub-path after /fn/NAME),
// r.URL.RawQuery, r.Header, r.Body, r.Host and r.RemoteAddr are filled in, and
// the status, headers and body written to w go back to the caller. Handle
// registers the handler and returns; the host then calls it once per request,
// one request at a time, on a warm instance.
//
// Built for any other GOOS, Handle serves the handler over HTTP on
// 127.0.0.1:$PORT (8080 by default; NIMBUS_ADDR overrides the whole address) and
// returns only when the server stops, so the same code runs under `go run` and
// as a Nimbus process function.
//
// The package has no dependencies outside the standard library.
package nimbus

import "net/http"

// InvocationIDHeader carries the id of the invocation in the request headers.
const InvocationIDHeader = "X-Nimbus-Invocation-Id"

// InvocationID returns the id Nimbus gave to the invocation serving r, or ""
// when r did not come through Nimbus.
func InvocationID(r *http.Request) string {
	return r.Header.Get(InvocationIDHeader)
}
