package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// LogLine is one line of a function's output as the logs API streams it.
type LogLine struct {
	Time         time.Time `json:"time"`
	Tenant       string    `json:"tenant"`
	Function     string    `json:"function"`
	Version      int       `json:"version"`
	InvocationID string    `json:"invocation_id"`
	Stream       string    `json:"stream"`
	Line         string    `json:"line"`
}

func init() { register(newLogsCmd) }

func newLogsCmd(app *App) *cobra.Command {
	var (
		follow           bool
		since, grep, inv string
		limit            int
	)
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show a function's output (stdout and stderr of its invocations)",
		Long: `Show what a function wrote, one line per output line:
TIME [INVOCATION-ID] LINE, with lines from stderr marked "stderr|". With -f the
command keeps streaming new lines until interrupted.`,
		Example: `  nimbus logs hello
  nimbus logs hello -f
  nimbus logs hello --since 1h --grep timeout
  nimbus logs hello --invocation 01JD3V6Q8Z6W4K0M1T2N3P4Q5R -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			q := url.Values{}
			if since != "" {
				if _, err := time.ParseDuration(since); err != nil {
					return fmt.Errorf("--since %q: write a duration like 10m or 2h", since)
				}
				q.Set("since", since)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if follow {
				q.Set("follow", "1")
			}
			if grep != "" {
				q.Set("grep", grep)
			}
			if inv != "" {
				q.Set("invocation", inv)
			}
			p := fnPath(args[0]) + "/logs"
			if len(q) > 0 {
				p += "?" + q.Encode()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			resp, err := app.request(ctx, http.MethodGet, p, nil, http.Header{"Accept": {"application/x-ndjson"}})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			err = app.printLogs(resp.Body)
			if ctx.Err() != nil {
				return nil // interrupted while following: a normal end
			}
			return err
		},
	}
	f := c.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep streaming new lines")
	f.StringVar(&since, "since", "", "only lines newer than this, e.g. 10m")
	f.StringVar(&grep, "grep", "", "only lines that contain TEXT")
	f.StringVar(&inv, "invocation", "", "only lines of this invocation id")
	f.IntVar(&limit, "limit", 0, "at most this many lines (server default 1000)")
	app.addOutputFlag(c)
	return c
}

// printLogs copies an NDJSON log stream to stdout, formatted unless -o json.
func (app *App) printLogs(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		if app.Output == "json" {
			if _, err := fmt.Fprintf(app.Stdout, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		var l LogLine
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("decoding a log line %q: %w", truncate(string(b), 80), err)
		}
		if _, err := fmt.Fprintln(app.Stdout, formatLogLine(&l)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the log stream: %w", err)
	}
	return nil
}

func formatLogLine(l *LogLine) string {
	ts := l.Time.Local().Format("2006-01-02 15:04:05.000")
	id := l.InvocationID
	if id == "" {
		id = "-"
	}
	mark := ""
	if l.Stream == "stderr" {
		mark = "stderr| "
	}
	return fmt.Sprintf("%s [%s] %s%s", ts, id, mark, l.Line)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
