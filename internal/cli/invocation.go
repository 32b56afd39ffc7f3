package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// InvocationView is an async invocation's status as GET /api/v1/invocations/{id} answers.
type InvocationView struct {
	ID         string     `json:"id"`
	Function   string     `json:"function"`
	Version    int        `json:"version,omitempty"`
	Trigger    string     `json:"trigger"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	Error      string     `json:"error,omitempty"`
	StatusCode int        `json:"status_code,omitempty"`
	Enqueued   time.Time  `json:"enqueued"`
	Started    *time.Time `json:"started,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	DurationMS float64    `json:"duration_ms,omitempty"`
	DeadLetter bool       `json:"dead_letter,omitempty"`
	Result     *struct {
		ContentType string `json:"content_type,omitempty"`
		Text        string `json:"text,omitempty"`
		Base64      string `json:"base64,omitempty"`
		Size        int    `json:"size"`
		Truncated   bool   `json:"truncated,omitempty"`
	} `json:"result,omitempty"`
}

func init() { register(newInvocationCmd) }

func newInvocationCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "invocation ID",
		Short: "Show the status and result of an async invocation",
		Example: `  id=$(nimbus invoke report --async -d '{"month":"2026-10"}')
  nimbus invocation "$id"
  nimbus invocation "$id" -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var v InvocationView
			if err := app.call(ctx, "GET", "/api/v1/invocations/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(v)
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "id:\t%s\n", v.ID)
			fn := v.Function
			if v.Version > 0 {
				fn = fmt.Sprintf("%s (version %d)", fn, v.Version)
			}
			fmt.Fprintf(tw, "function:\t%s\n", fn)
			fmt.Fprintf(tw, "trigger:\t%s\n", v.Trigger)
			state := v.State
			if v.DeadLetter {
				state += " (in dead letters)"
			}
			fmt.Fprintf(tw, "state:\t%s\n", state)
			fmt.Fprintf(tw, "attempts:\t%d\n", v.Attempts)
			fmt.Fprintf(tw, "queued:\t%s\n", v.Enqueued.Local().Format(time.RFC3339))
			if v.Finished != nil {
				fmt.Fprintf(tw, "finished:\t%s\n", v.Finished.Local().Format(time.RFC3339))
			}
			if v.DurationMS > 0 {
				fmt.Fprintf(tw, "duration:\t%.1f ms\n", v.DurationMS)
			}
			if v.StatusCode != 0 {
				fmt.Fprintf(tw, "status:\t%d\n", v.StatusCode)
			}
			if v.Error != "" {
				fmt.Fprintf(tw, "error:\t%s\n", v.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if r := v.Result; r != nil {
				switch {
				case r.Text != "":
					fmt.Fprintf(app.Stdout, "\n%s", r.Text)
					if !strings.HasSuffix(r.Text, "\n") {
						fmt.Fprintln(app.Stdout)
					}
				case r.Base64 != "":
					fmt.Fprintf(app.Stdout, "\n(%d bytes of binary result; -o json shows them in base64)\n", r.Size)
				}
				if r.Truncated {
					fmt.Fprintln(app.Stdout, "(result truncated to 256 KB)")
				}
			}
			return nil
		},
	}
	app.addOutputFlag(c)
	return c
}
