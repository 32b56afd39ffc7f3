package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

func init() { register(newInvokeCmd) }

func newInvokeCmd(app *App) *cobra.Command {
	var (
		data, method, subPath string
		headers               []string
		async, include        bool
	)
	c := &cobra.Command{
		Use:   "invoke NAME[@VERSION|@ALIAS]",
		Short: "Call a function over HTTP and print its answer",
		Long: `Call a function through the gateway (/fn/NAME) and print the response body.
With -i the status line and headers go to stderr. The exit code is 1 when the
answer is a 4xx or 5xx; the error goes to stderr. -d sends a body (and implies
POST); -d @file reads it from a file, -d @- from stdin. With --async the call is
queued (/async/NAME) and the invocation id is printed.`,
		Example: `  nimbus invoke hello
  nimbus invoke hello --path /greet -H 'Accept: text/plain' -i
  nimbus invoke echo -d '{"name":"Ada"}'
  nimbus invoke resize@2 -d @photo.jpg -H 'Content-Type: image/jpeg' > small.jpg
  nimbus invoke report --async -d '{"month":"2026-10"}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var body []byte
			if cmd.Flags().Changed("data") {
				b, err := readData(data, app.Stdin)
				if err != nil {
					return err
				}
				body = b
			}
			if method == "" {
				method = http.MethodGet
				if body != nil || async {
					method = http.MethodPost
				}
			}
			method = strings.ToUpper(method)
			if subPath != "" && !strings.HasPrefix(subPath, "/") {
				subPath = "/" + subPath
			}
			prefix := "/fn/"
			if async {
				prefix = "/async/"
			}
			h := http.Header{}
			for _, kv := range headers {
				k, v, ok := strings.Cut(kv, ":")
				if !ok || strings.TrimSpace(k) == "" {
					return fmt.Errorf("-H %q: write a header as 'Name: value'", kv)
				}
				h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			if body != nil && h.Get("Content-Type") == "" {
				h.Set("Content-Type", guessContentType(body))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(app.Server, "/")+prefix+name+subPath, bytes.NewReader(body))
			if err != nil {
				return fmt.Errorf("invoking %s: %w", name, err)
			}
			if body == nil {
				req.Body, req.ContentLength = http.NoBody, 0
			}
			for k, vs := range h {
				req.Header[k] = vs
			}
			if k := app.key(); k != "" && req.Header.Get("Authorization") == "" {
				req.Header.Set("Authorization", "Bearer "+k)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				return fmt.Errorf("cannot reach the Nimbus server at %s (start one with `nimbus dev` or set --server): %w", app.Server, err)
			}
			defer resp.Body.Close()
			if include {
				printHead(app.Stderr, resp)
			}
			if resp.StatusCode >= 400 {
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
				if code, msg, ok := apierr.Decode(data); ok {
					fmt.Fprintf(app.Stderr, "error: %s (%d %s)\n", msg, resp.StatusCode, code)
				} else {
					_, _ = app.Stdout.Write(data)
					fmt.Fprintf(app.Stderr, "error: %s answered %s\n", name, resp.Status)
				}
				return &exitError{code: 1}
			}
			if async && !include {
				var acc struct {
					ID string `json:"id"`
				}
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				if json.Unmarshal(data, &acc) == nil && acc.ID != "" {
					fmt.Fprintln(app.Stdout, acc.ID)
					return nil
				}
				_, err := app.Stdout.Write(data)
				return err
			}
			if _, err := io.Copy(app.Stdout, resp.Body); err != nil {
				return fmt.Errorf("reading the answer of %s: %w", name, err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&data, "data", "d", "", "request body; @file reads a file, @- reads stdin (implies POST)")
	f.StringVarP(&method, "request", "X", "", "HTTP method (default GET, or POST with -d)")
	f.StringVar(&subPath, "path", "", "sub-path after /fn/NAME, with an optional ?query")
	f.StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	f.BoolVar(&async, "async", false, "queue the invocation and print its id")
	f.BoolVarP(&include, "include", "i", false, "print the status line and headers to stderr")
	return c
}

// readData reads -d: literal text, @file, or @- for stdin.
func readData(d string, stdin io.Reader) ([]byte, error) {
	if !strings.HasPrefix(d, "@") {
		return []byte(d), nil
	}
	p := d[1:]
	if p == "-" {
		if stdin == nil {
			return nil, errors.New("-d @-: no standard input")
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading the body from stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("-d @%s: %w", p, err)
	}
	return b, nil
}

func guessContentType(b []byte) string {
	switch {
	case json.Valid(b):
		return "application/json"
	case utf8.Valid(b):
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// printHead writes the status line and headers, like curl -i, to w.
func printHead(w io.Writer, resp *http.Response) {
	fmt.Fprintf(w, "%s %s\n", resp.Proto, resp.Status)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
}
