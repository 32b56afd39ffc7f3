// Command server is the test function of the process runtime: an HTTP server
// on $PORT whose paths exercise the runtime (echo, streaming, logs, crashes,
// memory, forks, sleeps).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s", r.Method, r.URL.RequestURI())
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := io.Copy(w, r.Body); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
		}
	})
	mux.HandleFunc("/duplex", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "pong %s\n", sc.Text())
			http.NewResponseController(w).Flush()
		}
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) {
		wd, _ := os.Getwd()
		json.NewEncoder(w).Encode(map[string]any{
			"env": os.Environ(), "uid": os.Getuid(), "pid": os.Getpid(), "wd": wd,
			"headers": r.Header, "host": r.Host,
		})
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Nimbus-Invocation-Id")
		for i := range 3 {
			fmt.Fprintf(os.Stdout, "out %d %s\n", i, id)
			fmt.Fprintf(os.Stderr, "err %d %s\n", i, id)
		}
		io.WriteString(w, "logged")
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, "about to crash")
		os.Exit(2)
	})
	mux.HandleFunc("/oom", func(w http.ResponseWriter, r *http.Request) {
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		// A grandchild that would outlive us if only we were killed.
		exec.Command("/bin/sh", "-c", "sleep 1000 &").Run()
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(d)
		io.WriteString(w, "slept")
	})
	mux.HandleFunc("/forkbomb", func(w http.ResponseWriter, r *http.Request) {
		exec.Command("/bin/sh", "-c", "bomb() { bomb | bomb & }; bomb").Start()
		io.WriteString(w, "bombed")
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	fmt.Println("listening on", srv.Addr)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
