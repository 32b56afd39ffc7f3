// Command misbehave is a test function that does, on request, what a broken
// function does: loop, allocate without bound, panic, sleep, or log.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

var calls int

func main() {
	nimbus.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		switch r.URL.Path {
		case "/loop":
			for {
				calls++
			}
		case "/alloc":
			var keep [][]byte
			for {
				keep = append(keep, make([]byte, 1<<20))
			}
		case "/panic":
			panic("misbehave was asked to panic")
		case "/sleep":
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
			fmt.Fprint(w, "slept")
		case "/log":
			fmt.Println("to stdout:", r.URL.Query().Get("msg"))
			fmt.Fprintln(os.Stderr, "to stderr:", r.URL.Query().Get("msg"))
			fmt.Fprint(w, "logged")
		case "/every10":
			if calls%10 == 0 {
				panic("every tenth call traps")
			}
			fmt.Fprint(w, "ok")
		case "/size":
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
		case "/env":
			fmt.Fprint(w, os.Getenv(r.URL.Query().Get("k")))
		case "/header":
			fmt.Fprint(w, "header="+r.Header.Get(r.URL.Query().Get("k")))
		default:
			fmt.Fprintf(w, "ok %d", calls)
		}
	}))
}
