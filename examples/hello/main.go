// Command hello is the smallest Nimbus function: it greets ?name= (default
// "world"). Build it for Nimbus with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
//
// or run it locally with `go run .` (it then listens on 127.0.0.1:$PORT).
package main

import (
	"io"
	"net/http"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

func main() {
	nimbus.Handle(http.HandlerFunc(hello))
}

func hello(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "Hello, "+name+"!")
}
