package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/metering"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

func init() { register(newTopCmd) }

// topSample is one poll of the server.
type topSample struct {
	at    time.Time
	fns   []FunctionView
	stats map[string]telemetry.FunctionStats // by function; nil when the server has no /api/v1/stats
	cost  map[string]metering.UsageRow       // by function, over the cost window
}

func newTopCmd(app *App) *cobra.Command {
	var (
		interval time.Duration
		once     bool
		window   string
	)
	c := &cobra.Command{
		Use:   "top",
		Short: "Show live per-function rates, latencies, instances and cost",
		Long: `Show, refreshed every --interval, each function's invocation and error rates,
p50/p99 latency (from the server's duration histogram), instances (busy/total),
in-flight and queued invocations, and the cost of the last --cost-window.
Rates are measured between two polls. On a terminal the table redraws in
place; otherwise each refresh prints a plain table. --once prints one table
(after two polls, one interval apart) and exits.`,
		Example: `  nimbus top
  nimbus top --interval 5s --cost-window 1h
  nimbus top --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return fmt.Errorf("--interval %s: use a positive duration", interval)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			term := isTerminal(app.Stdout)
			prev, err := app.topPoll(ctx, window)
			if err != nil {
				return err
			}
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
				cur, err := app.topPoll(ctx, window)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if term && !once {
					fmt.Fprint(app.Stdout, "\x1b[H\x1b[2J")
				}
				printTop(app.Stdout, prev, cur, window)
				if once {
					return nil
				}
				prev = cur
			}
		},
	}
	c.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between refreshes")
	c.Flags().BoolVar(&once, "once", false, "print one table and exit")
	c.Flags().StringVar(&window, "cost-window", "24h", "cost over this window (30d, 24h, 1h)")
	return c
}

func (app *App) topPoll(ctx context.Context, window string) (*topSample, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s := &topSample{at: time.Now()}
	var list struct {
		Functions []FunctionView `json:"functions"`
	}
	if err := app.call(cctx, http.MethodGet, "/api/v1/functions", nil, &list); err != nil {
		return nil, err
	}
	s.fns = list.Functions
	var stats struct {
		Functions []telemetry.FunctionStats `json:"functions"`
	}
	err := app.call(cctx, http.MethodGet, "/api/v1/stats", nil, &stats)
	var ae *APIError
	switch {
	case err == nil:
		s.stats = map[string]telemetry.FunctionStats{}
		for _, st := range stats.Functions {
			s.stats[st.Function] = st
		}
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
	default:
		return nil, err
	}
	var rep metering.UsageReport
	err = app.call(cctx, http.MethodGet, "/api/v1/usage?by=function&since="+window, nil, &rep)
	switch {
	case err == nil:
		s.cost = map[string]metering.UsageRow{}
		for _, r := range rep.Rows {
			s.cost[r.Key] = r
		}
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
	default:
		return nil, err
	}
	return s, nil
}

func printTop(w io.Writer, prev, cur *topSample, window string) {
	secs := cur.at.Sub(prev.at).Seconds()
	fmt.Fprintf(w, "nimbus top — %s — %d functions\n", cur.at.Format("15:04:05"), len(cur.fns))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "FUNCTION\tREQ/S\tERR/S\tTHROTTLED/S\tP50\tP99\tINSTANCES\tIN-FLIGHT\tQUEUED\tCOST(%s)\t\n", window)
	fns := append([]FunctionView(nil), cur.fns...)
	sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
	for _, f := range fns {
		rate := func(get func(telemetry.FunctionStats) uint64) string {
			if cur.stats == nil || secs <= 0 {
				return "-"
			}
			c, p := cur.stats[f.Name], prev.stats[f.Name]
			d := float64(0)
			if get(c) >= get(p) {
				d = float64(get(c) - get(p))
			}
			return fmt.Sprintf("%.1f", d/secs)
		}
		p50, p99 := "-", "-"
		if st, ok := cur.stats[f.Name]; ok && st.Invocations > st.Throttled {
			p50, p99 = fmtSeconds(st.P50), fmtSeconds(st.P99)
		}
		cost := "-"
		if cur.cost != nil {
			cost = fmt.Sprintf("$%.6f", cur.cost[f.Name].Cost)
		}
		inst := f.Instances
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t\n", f.Name,
			rate(func(s telemetry.FunctionStats) uint64 { return s.Invocations - s.Throttled }),
			rate(func(s telemetry.FunctionStats) uint64 { return s.Errors }),
			rate(func(s telemetry.FunctionStats) uint64 { return s.Throttled }),
			p50, p99, inst.Busy, inst.Starting+inst.Idle+inst.Busy, f.InFlight, queuedOf(cur, f.Name), cost)
	}
	_ = tw.Flush()
	if len(fns) == 0 {
		fmt.Fprintln(w, "no functions yet: deploy one with `nimbus deploy NAME --code PATH`")
	}
	fmt.Fprintln(w)
}

func queuedOf(s *topSample, name string) int {
	if st, ok := s.stats[name]; ok {
		return st.Queued
	}
	return 0
}

func fmtSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
