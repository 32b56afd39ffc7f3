package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() { register(newKVCmd) }

// escapeKey escapes a key for a URL path, keeping its '/' separators.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func kvPath(bucket string, key ...string) string {
	p := "/api/v1/kv/" + url.PathEscape(bucket)
	if len(key) > 0 {
		p += "/" + escapeKey(key[0])
	}
	return p
}

// kvEntry is a key as the KV API shows it.
type kvEntry struct {
	Key      string          `json:"key"`
	Revision uint64          `json:"revision"`
	Value    json.RawMessage `json:"value,omitempty"`
	Op       string          `json:"op,omitempty"`
}

func newKVCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "kv",
		Short: "App data: buckets of JSON documents (key-value with revisions)",
		Example: `  nimbus kv mb todos --history 5
  nimbus kv put todos users/ada '{"done":false}'
  nimbus kv get todos users/ada
  nimbus kv ls todos --prefix users/
  nimbus kv watch todos`,
	}

	var history int
	var ttl string
	var maxValue int
	mb := &cobra.Command{
		Use:     "mb BUCKET",
		Short:   "Make a bucket",
		Example: "  nimbus kv mb todos\n  nimbus kv mb sessions --ttl 1h --history 1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			opts := map[string]any{}
			if history > 0 {
				opts["history"] = history
			}
			if ttl != "" {
				opts["ttl"] = ttl
			}
			if maxValue > 0 {
				opts["max_value_bytes"] = maxValue
			}
			var out json.RawMessage
			if err := app.call(ctx, http.MethodPut, kvPath(args[0]), opts, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out)
			}
			fmt.Fprintf(app.Stdout, "bucket %s created\n", args[0])
			return nil
		},
	}
	mb.Flags().IntVar(&history, "history", 0, "revisions kept per key (1-64, default 1)")
	mb.Flags().StringVar(&ttl, "ttl", "", "expire keys this long after their last write (e.g. 1h)")
	mb.Flags().IntVar(&maxValue, "max-value-bytes", 0, "largest value (default: the server's limit, 1 MB)")
	app.addOutputFlag(mb)

	rb := &cobra.Command{
		Use:     "rb BUCKET",
		Short:   "Remove a bucket and every key in it",
		Example: "  nimbus kv rb todos",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, kvPath(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "bucket %s removed\n", args[0])
			return nil
		},
	}

	var prefix string
	var limit int
	var all bool
	ls := &cobra.Command{
		Use:     "ls [BUCKET]",
		Short:   "List buckets, or the keys of a bucket",
		Example: "  nimbus kv ls\n  nimbus kv ls todos --prefix users/ --limit 20\n  nimbus kv ls todos --all -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			if len(args) == 0 {
				var out struct {
					Buckets []struct {
						Name    string `json:"name"`
						Created string `json:"created"`
						Options struct {
							History int    `json:"history"`
							TTL     string `json:"ttl"`
						} `json:"options"`
					} `json:"buckets"`
				}
				if err := app.call(ctx, http.MethodGet, "/api/v1/kv", nil, &out); err != nil {
					return err
				}
				if app.Output == "json" {
					return app.printJSON(out)
				}
				if len(out.Buckets) == 0 {
					fmt.Fprintln(app.Stdout, "no buckets yet: make one with `nimbus kv mb NAME`")
					return nil
				}
				tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BUCKET\tHISTORY\tTTL\tCREATED")
				for _, b := range out.Buckets {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", b.Name, b.Options.History, dash(b.Options.TTL), b.Created)
				}
				return tw.Flush()
			}
			var items []kvEntry
			cursor := ""
			for {
				q := url.Values{}
				if prefix != "" {
					q.Set("prefix", prefix)
				}
				if limit > 0 {
					q.Set("limit", strconv.Itoa(limit))
				}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				var page struct {
					Items      []kvEntry `json:"items"`
					NextCursor string    `json:"next_cursor"`
				}
				if err := app.call(ctx, http.MethodGet, kvPath(args[0])+"?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				items = append(items, page.Items...)
				cursor = page.NextCursor
				if !all || cursor == "" {
					break
				}
			}
			if app.Output == "json" {
				return app.printJSON(map[string]any{"items": items, "next_cursor": cursor})
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tREVISION\tVALUE")
			for _, it := range items {
				v := string(it.Value)
				if len(v) > 60 {
					v = v[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\n", it.Key, it.Revision, v)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if cursor != "" {
				fmt.Fprintln(app.Stderr, "more keys follow: rerun with --all to list every page")
			}
			return nil
		},
	}
	ls.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this")
	ls.Flags().IntVar(&limit, "limit", 0, "keys per page (1-1000, default 100)")
	ls.Flags().BoolVar(&all, "all", false, "follow every page")
	app.addOutputFlag(ls)

	var withHistory bool
	get := &cobra.Command{
		Use:     "get BUCKET KEY",
		Short:   "Print a document (-o json adds its revision)",
		Example: "  nimbus kv get todos users/ada\n  nimbus kv get todos users/ada --history",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			p := kvPath(args[0], args[1])
			if withHistory {
				var out struct {
					History []kvEntry `json:"history"`
				}
				if err := app.call(ctx, http.MethodGet, p+"?history=1", nil, &out); err != nil {
					return err
				}
				if app.Output == "json" {
					return app.printJSON(out)
				}
				tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "REVISION\tOP\tVALUE")
				for _, e := range out.History {
					fmt.Fprintf(tw, "%d\t%s\t%s\n", e.Revision, e.Op, dash(string(e.Value)))
				}
				return tw.Flush()
			}
			resp, err := app.request(ctx, http.MethodGet, p, nil, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if app.Output == "json" {
				rev, _ := strconv.ParseUint(resp.Header.Get("X-Nimbus-Revision"), 10, 64)
				return app.printJSON(kvEntry{Key: args[1], Revision: rev, Value: data})
			}
			var buf bytes.Buffer
			if json.Indent(&buf, data, "", "  ") == nil {
				data = buf.Bytes()
			}
			fmt.Fprintln(app.Stdout, string(data))
			return nil
		},
	}
	get.Flags().BoolVar(&withHistory, "history", false, "show every kept revision")
	app.addOutputFlag(get)

	var ifRev uint64
	var create bool
	var data string
	put := &cobra.Command{
		Use:   "put BUCKET KEY [JSON]",
		Short: "Store a JSON document (from the argument, -d @file, or stdin with -d -)",
		Example: `  nimbus kv put todos users/ada '{"done":false}'
  nimbus kv put todos users/ada -d @ada.json --if-revision 7
  echo '{"n":1}' | nimbus kv put todos counter -d - --create`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			var body []byte
			var err error
			switch {
			case len(args) == 3:
				body = []byte(args[2])
			case data != "":
				body, err = readArgData(data, app.Stdin)
				if err != nil {
					return err
				}
			default:
				return fmt.Errorf("give the document as the third argument or with -d")
			}
			if !json.Valid(body) {
				return fmt.Errorf("the value is not valid JSON (quote strings: '\"text\"')")
			}
			h := http.Header{"Content-Type": {"application/json"}}
			if ifRev > 0 {
				h.Set("If-Match", strconv.FormatUint(ifRev, 10))
			}
			if create {
				h.Set("If-None-Match", "*")
			}
			resp, err := app.request(ctx, http.MethodPut, kvPath(args[0], args[1]), bytes.NewReader(body), h)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var out struct {
				Revision uint64 `json:"revision"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				return fmt.Errorf("decoding the server's answer: %w", err)
			}
			if app.Output == "json" {
				return app.printJSON(out)
			}
			fmt.Fprintf(app.Stdout, "%s revision %d\n", args[1], out.Revision)
			return nil
		},
	}
	put.Flags().Uint64Var(&ifRev, "if-revision", 0, "write only if the key is at this revision (compare-and-set)")
	put.Flags().BoolVar(&create, "create", false, "write only if the key does not exist")
	put.Flags().StringVarP(&data, "data", "d", "", "the document: JSON, @file, or - for stdin")
	app.addOutputFlag(put)

	var rmRev uint64
	rm := &cobra.Command{
		Use:     "rm BUCKET KEY",
		Short:   "Delete a key (its history stays until the bucket's history depth rolls it out)",
		Example: "  nimbus kv rm todos users/ada\n  nimbus kv rm todos users/ada --if-revision 9",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			h := http.Header{}
			if rmRev > 0 {
				h.Set("If-Match", strconv.FormatUint(rmRev, 10))
			}
			resp, err := app.request(ctx, http.MethodDelete, kvPath(args[0], args[1]), nil, h)
			if err != nil {
				return err
			}
			resp.Body.Close()
			fmt.Fprintf(app.Stdout, "%s deleted\n", args[1])
			return nil
		},
	}
	rm.Flags().Uint64Var(&rmRev, "if-revision", 0, "delete only if the key is at this revision")

	var watchPrefix string
	watch := &cobra.Command{
		Use:     "watch BUCKET",
		Short:   "Print every put and delete as it happens (Ctrl-C to stop)",
		Example: "  nimbus kv watch todos\n  nimbus kv watch todos --prefix users/ -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				var cancel func()
				ctx, cancel = cmdContext(0)
				defer cancel()
			}
			q := url.Values{"watch": {"1"}}
			if watchPrefix != "" {
				q.Set("prefix", watchPrefix)
			}
			resp, err := app.request(ctx, http.MethodGet, kvPath(args[0])+"?"+q.Encode(), nil, http.Header{"Accept": {"text/event-stream"}})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				line, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				if app.Output == "json" {
					fmt.Fprintln(app.Stdout, line)
					continue
				}
				var e kvEntry
				if json.Unmarshal([]byte(line), &e) != nil {
					continue
				}
				fmt.Fprintf(app.Stdout, "%-6s %s rev %d %s\n", e.Op, e.Key, e.Revision, string(e.Value))
			}
			if err := sc.Err(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("watch interrupted: %w", err)
			}
			return nil
		},
	}
	watch.Flags().StringVar(&watchPrefix, "prefix", "", "only keys starting with this")
	app.addOutputFlag(watch)

	root.AddCommand(mb, rb, ls, get, put, rm, watch)
	return root
}

// readArgData reads -d: "@file", "-" (stdin) or the literal text.
func readArgData(d string, stdin io.Reader) ([]byte, error) {
	switch {
	case d == "-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(d, "@"):
		b, err := os.ReadFile(d[1:])
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", d[1:], err)
		}
		return b, nil
	}
	return []byte(d), nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
