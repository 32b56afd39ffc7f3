// Command hostguest is a test function that calls the Nimbus host API: each
// path exercises one call and answers its result, or the error with a status
// that names its kind (404 not found, 403 denied, 503 unavailable, 500 other).
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, nimbus.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, nimbus.ErrDenied):
		status = http.StatusForbidden
	case errors.Is(err, nimbus.ErrUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, nimbus.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, nimbus.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	}
	w.WriteHeader(status)
	io.WriteString(w, err.Error())
}

func main() {
	nimbus.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		q := r.URL.Query()
		body, _ := io.ReadAll(r.Body)
		var err error
		switch r.URL.Path {
		case "/kv/put":
			err = nimbus.KV(q.Get("bucket")).Put(ctx, q.Get("key"), body)
		case "/kv/get":
			var v []byte
			if v, err = nimbus.KV(q.Get("bucket")).Get(ctx, q.Get("key")); err == nil {
				w.Write(v)
			}
		case "/kv/delete":
			err = nimbus.KV(q.Get("bucket")).Delete(ctx, q.Get("key"))
		case "/kv/list":
			var keys []string
			if keys, err = nimbus.KV(q.Get("bucket")).List(ctx, q.Get("prefix")); err == nil {
				io.WriteString(w, strings.Join(keys, ","))
			}
		case "/obj/put":
			err = nimbus.Objects(q.Get("bucket")).Put(ctx, q.Get("key"), body, r.Header.Get("Content-Type"))
		case "/obj/get":
			var v []byte
			if v, err = nimbus.Objects(q.Get("bucket")).Get(ctx, q.Get("key")); err == nil {
				w.Write(v)
			}
		case "/obj/list":
			var keys []string
			if keys, err = nimbus.Objects(q.Get("bucket")).List(ctx, q.Get("prefix")); err == nil {
				io.WriteString(w, strings.Join(keys, ","))
			}
		case "/secret":
			var v string
			if v, err = nimbus.Secret(q.Get("name")); err == nil {
				io.WriteString(w, v)
			}
		case "/config":
			var v string
			if v, err = nimbus.Config(q.Get("name")); err == nil {
				io.WriteString(w, v)
			}
		case "/log":
			nimbus.Log(q.Get("level"), string(body), "path", r.URL.Path, "n", 7)
		case "/publish":
			err = nimbus.Publish(ctx, q.Get("topic"), body)
		case "/fetch":
			var resp *http.Response
			req, _ := http.NewRequestWithContext(ctx, "POST", q.Get("url"), strings.NewReader(string(body)))
			req.Header.Set("X-Guest", "yes")
			if resp, err = nimbus.HTTPClient().Do(req); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				fmt.Fprintf(w, "%d|%s|%s", resp.StatusCode, resp.Header.Get("X-Answer"), b)
			}
		case "/hostile":
			hostile(w)
		default:
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if err != nil {
			fail(w, err)
		}
	}))
}
