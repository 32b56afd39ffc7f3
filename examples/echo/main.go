// Command echo answers every request with a JSON description of it: method,
// path, query, headers and body. It is a Nimbus function built with the Go SDK.
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"unicode/utf8"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   map[string][]string `json:"query"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
	// BodyBase64 is set instead of Body when the body is not UTF-8 text.
	BodyBase64 []byte `json:"body_base64,omitempty"`
	Length     int    `json:"length"`
}

func main() {
	nimbus.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		e := echo{
			Method:  r.Method,
			Path:    r.URL.Path,
			Query:   r.URL.Query(),
			Headers: r.Header,
			Length:  len(body),
		}
		if utf8.Valid(body) {
			e.Body = string(body)
		} else {
			e.BodyBase64 = body
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e)
	}))
}
