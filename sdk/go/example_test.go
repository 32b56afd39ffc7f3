package nimbus_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

// A Nimbus function is a main package whose main calls nimbus.Handle with a
// plain http.Handler. The handler is ordinary net/http code, so it can be
// tested with httptest like any other.
func Example() {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		fmt.Fprintf(w, "Hello, %s!", name)
	})
	// In the function's main: nimbus.Handle(hello)
	_ = nimbus.Handle

	rec := httptest.NewRecorder()
	hello.ServeHTTP(rec, httptest.NewRequest("GET", "/?name=Ada", nil))
	body, _ := io.ReadAll(rec.Body)
	fmt.Println(string(body))
	// Output: Hello, Ada!
}
