// Command cgi is a Nimbus wasm-cgi function: a plain WASI command that speaks
// CGI (RFC 3875). The request arrives in environment variables and on stdin;
// the response is written to stdout as headers, a blank line, then the body.
// It needs no SDK:
//
//	GOOS=wasip1 GOARCH=wasm go build -o cgi.wasm .
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Print("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Println("Hello from a CGI function!")
	fmt.Printf("PATH_INFO=%s\n", os.Getenv("PATH_INFO"))
	fmt.Printf("QUERY_STRING=%s\n", os.Getenv("QUERY_STRING"))
}
