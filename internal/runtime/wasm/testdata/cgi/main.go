// Command cgi is a test CGI function for the wasm-cgi runtime: PATH_INFO picks
// a behaviour.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

func main() {
	switch os.Getenv("PATH_INFO") {
	case "/env":
		fmt.Print("Content-Type: text/plain\n\n")
		env := os.Environ()
		sort.Strings(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
	case "/stdin":
		fmt.Print("Content-Type: application/octet-stream\r\nX-Extra: yes\r\n\r\n")
		io.Copy(os.Stdout, os.Stdin)
	case "/status":
		fmt.Print("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnothing here")
	case "/redirect":
		fmt.Print("Location: https://example.org/\n\n")
	case "/bad-colon":
		fmt.Print("this is not a header\n\nbody")
	case "/bad-status":
		fmt.Print("Status: abc\n\nbody")
	case "/no-blank":
		fmt.Print("Content-Type: text/plain\n")
	case "/nothing":
	case "/crash":
		fmt.Fprintln(os.Stderr, "about to fail")
		panic("cgi crashed")
	case "/loop":
		for {
		}
	default:
		fmt.Print("Status: 400 Bad Request\n\nunknown path")
	}
}
