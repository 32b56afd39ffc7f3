// Command hostfn is a process function that uses the host API through the
// Go SDK's local-endpoint path: PUT /kv/{key} stores the body, GET reads it
// back; GET /secret/{name} reads a secret.
package main

import (
	"errors"
	"io"
	"net/http"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := nimbus.KV("data").Put(r.Context(), r.PathValue("key"), b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		v, err := nimbus.KV("data").Get(r.Context(), r.PathValue("key"))
		if errors.Is(err, nimbus.ErrNotFound) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(v)
	})
	mux.HandleFunc("GET /secret/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, err := nimbus.Secret(r.PathValue("name"))
		if errors.Is(err, nimbus.ErrDenied) {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, v)
	})
	nimbus.Handle(mux)
}
