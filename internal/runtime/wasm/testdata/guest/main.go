// Command guest is a test function for the wasm runtime: its sub-path picks
// a behaviour.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

var (
	count int
	hoard [][]byte
	// Read during initialisation: a snapshot bakes them in.
	initGreeting = os.Getenv("GREETING")
	initMono     = time.Now()
	table        = map[string]int{}
)

func init() {
	for i := range 500 {
		table[fmt.Sprintf("key-%03d", i)] = i * i
	}
}

func main() {
	nimbus.Handle(http.HandlerFunc(serve))
}

func serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path == "/" && os.Getenv("ROOT") == "random" {
		b := make([]byte, 8)
		rand.Read(b)
		fmt.Fprint(w, hex.EncodeToString(b))
		return
	}
	switch r.URL.Path {
	case "/mix":
		// Allocates, fills and reads maps, formats, and collects garbage.
		n, _ := strconv.Atoi(q.Get("n"))
		m := map[string][]int{}
		for i := range n {
			k := fmt.Sprintf("k%d", i%37)
			m[k] = append(m[k], i*len(k))
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s=%d;", k, len(m[k]))
		}
		if n%7 == 0 {
			runtime.GC()
		}
		fmt.Fprintf(&sb, "table=%d/%d", len(table), table["key-321"])
		w.Header().Set("X-Keys", strconv.Itoa(len(keys)))
		io.WriteString(w, sb.String())
	case "/init-env":
		fmt.Fprint(w, initGreeting)
	case "/clock":
		// The monotonic clock never goes back from what init saw, and the
		// wall clock is the real one.
		since := time.Since(initMono)
		fmt.Fprintf(w, "mono-forward=%v wall-recent=%v", since >= 0, time.Now().Year() >= 2025)
	case "/count-twice":
		count += 2
		fmt.Fprint(w, count)
	case "/echo":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		h := w.Header()
		h.Set("X-Method", r.Method)
		h.Set("X-Path", r.URL.Path)
		h.Set("X-Query", r.URL.RawQuery)
		h.Set("X-Host", r.Host)
		h.Set("X-Remote", r.RemoteAddr)
		h.Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
		h.Set("X-Invocation", nimbus.InvocationID(r))
		for k, v := range r.Header {
			if strings.HasPrefix(k, "X-Test-") {
				h["X-Got-"+strings.TrimPrefix(k, "X-Test-")] = v
			}
		}
		h.Add("X-Multi", "a")
		h.Add("X-Multi", "b")
		if s := q.Get("status"); s != "" {
			code, _ := strconv.Atoi(s)
			w.WriteHeader(code)
		}
		w.Write(body)
	case "/count":
		count++
		fmt.Fprint(w, count)
	case "/panic":
		panic("boom: " + q.Get("why"))
	case "/loop":
		for {
			count++
		}
	case "/sleep":
		time.Sleep(time.Hour)
	case "/alloc":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case "/log":
		fmt.Println("out:", q.Get("msg"))
		fmt.Fprintln(os.Stderr, "err:", q.Get("msg"))
		fmt.Print("partial")
		w.WriteHeader(http.StatusNoContent)
	case "/env":
		fmt.Fprint(w, os.Getenv(q.Get("name")))
	case "/rand":
		b := make([]byte, 16)
		rand.Read(b)
		fmt.Fprint(w, hex.EncodeToString(b))
	case "/big":
		n, _ := strconv.Atoi(q.Get("n"))
		chunk := make([]byte, 64<<10)
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	case "/exit":
		os.Exit(3)
	default:
		http.NotFound(w, r)
	}
}
