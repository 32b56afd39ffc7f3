// Command bare is the cold-start baseline: it serves one HTTP request on the
// listener it inherits as file descriptor 3, then exits.
package main

import (
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		os.Exit(2)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "17")
		_, _ = w.Write([]byte(`{"hello":"world"}`))
		w.(http.Flusher).Flush()
		close(done)
	})}
	go func() { _ = srv.Serve(ln) }()
	<-done
	os.Exit(0)
}
