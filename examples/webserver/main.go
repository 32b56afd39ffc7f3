// Command webserver is a plain HTTP server on $PORT: the contract of the
// process runtime (as Cloud Run, Knative and OpenFaaS's http mode).
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from a process function: %s %s (pid %d)\n", r.Method, r.URL.Path, os.Getpid())
	})
	addr := "127.0.0.1:" + os.Getenv("PORT")
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
