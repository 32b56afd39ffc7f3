package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/metering"
)

func init() { register(newUsageCmd) }

func newUsageCmd(app *App) *cobra.Command {
	var (
		tenant, since, until, by, function string
		all                                bool
	)
	c := &cobra.Command{
		Use:   "usage",
		Short: "Show invocations, GB-seconds and cost",
		Long: `Show what functions used: invocations, errors, throttled calls, cold starts,
billed milliseconds (each invocation rounded up to 1 ms), GB-seconds (billed
time × configured memory) and cost, grouped by function, day, hour or tenant.

Cost comes from the server's price table; by default AWS Lambda's public x86
list prices ($0.20 per million requests, $0.0000166667 per GB-second). Usage is
kept per hour, so --since and --until select whole hours.`,
		Example: `  nimbus usage
  nimbus usage --since 7d --by day
  nimbus usage --function hello --by hour --since 24h
  nimbus usage --tenant acme          # admin: another tenant
  nimbus usage --all --by tenant      # admin: every tenant`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			q := url.Values{}
			q.Set("since", since)
			for k, v := range map[string]string{"until": until, "by": by, "function": function, "tenant": tenant} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if all {
				q.Set("all", "true")
			}
			path := "/api/v1/usage?" + q.Encode()
			if app.Output == "json" {
				raw, err := app.getRaw(cmd, path)
				if err != nil {
					return err
				}
				return app.printRaw(raw)
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var rep metering.UsageReport
			if err := app.call(ctx, http.MethodGet, path, nil, &rep); err != nil {
				return err
			}
			printUsage(app, &rep)
			return nil
		},
	}
	c.Flags().StringVar(&tenant, "tenant", "", "tenant to report on (admin keys only)")
	c.Flags().BoolVar(&all, "all", false, "every tenant (admin keys only)")
	c.Flags().StringVar(&since, "since", "30d", "start: a duration ago (30d, 12h) or an RFC 3339 time")
	c.Flags().StringVar(&until, "until", "", "end: a duration ago or an RFC 3339 time (default now)")
	c.Flags().StringVar(&by, "by", "function", "group rows by function, day, hour or tenant")
	c.Flags().StringVar(&function, "function", "", "only this function")
	app.addOutputFlag(c)
	return c
}

func printUsage(app *App, rep *metering.UsageReport) {
	tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tINVOCATIONS\tERRORS\tTHROTTLED\tCOLD\tBILLED-MS\tGB-S\tCOST\t\n", map[string]string{
		"function": "FUNCTION", "day": "DAY", "hour": "HOUR", "tenant": "TENANT"}[rep.By])
	row := func(r metering.UsageRow) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.3f\t$%.6f\t\n", r.Key, r.Invocations, r.Errors, r.Throttled, r.ColdStarts, r.BilledMS, r.GBSeconds, r.Cost)
	}
	for _, r := range rep.Rows {
		row(r)
	}
	row(rep.Total)
	_ = tw.Flush()
	fmt.Fprintf(app.Stdout, "%s to %s; prices $%s per 1M requests, $%s per GB-second\n",
		rep.Since.Local().Format("2006-01-02 15:04"), rep.Until.Local().Format("2006-01-02 15:04"),
		strconv.FormatFloat(rep.Prices.PerMillionRequests, 'f', -1, 64), strconv.FormatFloat(rep.Prices.PerGBSecond, 'f', -1, 64))
}
