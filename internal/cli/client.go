package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// APIError is an error answer from the server.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// key returns the API key to send: --key, NIMBUS_KEY, or ./.nimbus/admin.key.
func (app *App) key() string {
	if app.Key != "" {
		return app.Key
	}
	for _, p := range []string{os.Getenv("NIMBUS_DATA"), ".nimbus"} {
		if p == "" {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(p, "admin.key")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// httpClient has no overall timeout: streams (logs -f) and long deploys are bounded by ctx.
var httpClient = &http.Client{}

// request sends one API request and returns the response; a non-2xx answer is
// turned into an *APIError (and the body closed).
func (app *App) request(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	url := strings.TrimRight(app.Server, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if k := app.key(); k != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Nimbus server at %s (start one with `nimbus dev` or set --server): %w", app.Server, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if code, msg, ok := apierr.Decode(data); ok {
			return nil, &APIError{Status: resp.StatusCode, Code: code, Message: msg}
		}
		return nil, &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	return resp, nil
}

// call sends in (JSON, unless nil) and decodes the answer into out (unless nil).
func (app *App) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	h := http.Header{}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
		h.Set("Content-Type", "application/json")
	}
	resp, err := app.request(ctx, method, path, body, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the server's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// printJSON writes v as indented JSON.
func (app *App) printJSON(v any) error {
	enc := json.NewEncoder(app.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ctx returns a context for one client command.
func cmdContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), timeout)
}

// isTerminal reports whether w is a terminal (progress output only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
