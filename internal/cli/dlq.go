package cli

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// DeadLetterView is a dead letter as GET /api/v1/functions/{name}/dlq lists it.
type DeadLetterView struct {
	ID       string    `json:"id"`
	Function string    `json:"function"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	FailedAt time.Time `json:"failed_at"`
	Event    struct {
		Trigger  string    `json:"trigger"`
		Enqueued time.Time `json:"enqueued"`
	} `json:"event"`
}

func init() { register(newDLQCmd) }

func dlqPath(name string) string { return "/api/v1/functions/" + url.PathEscape(name) + "/dlq" }

func newDLQCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay or purge a function's dead letters (async events whose retries ran out)",
		Example: `  nimbus dlq ls resize
  nimbus dlq replay resize            # queue every dead letter again
  nimbus dlq replay resize --id 3f9a… # only these
  nimbus dlq purge resize`,
	}
	ls := &cobra.Command{
		Use:     "ls NAME",
		Aliases: []string{"list"},
		Short:   "List a function's dead letters with their errors",
		Example: `  nimbus dlq ls resize
  nimbus dlq ls resize -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var out struct {
				DeadLetters []DeadLetterView `json:"dead_letters"`
			}
			if err := app.call(ctx, "GET", dlqPath(args[0]), nil, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out.DeadLetters)
			}
			if len(out.DeadLetters) == 0 {
				fmt.Fprintf(app.Stdout, "no dead letters for %s\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTRIGGER\tATTEMPTS\tFAILED\tERROR")
			for _, d := range out.DeadLetters {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.ID, orDash(d.Event.Trigger), d.Attempts, d.FailedAt.Local().Format(time.DateTime), truncate(d.Error, 80))
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(ls)

	var ids []string
	replay := &cobra.Command{
		Use:   "replay NAME [--id ID]...",
		Short: "Queue dead letters again as fresh invocations (all of them unless --id is given)",
		Example: `  nimbus dlq replay resize
  nimbus dlq replay resize --id 3f9a1c --id 77b0e2`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(60 * time.Second)
			defer cancel()
			in := map[string][]string{"ids": ids}
			var out struct {
				Replayed int `json:"replayed"`
			}
			if err := app.call(ctx, "POST", dlqPath(args[0])+"/replay", in, &out); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "replayed %d dead letter(s) of %s\n", out.Replayed, args[0])
			return nil
		},
	}
	replay.Flags().StringArrayVar(&ids, "id", nil, "invocation id of a dead letter to replay (repeatable)")

	purge := &cobra.Command{
		Use:     "purge NAME",
		Short:   "Delete every dead letter of a function",
		Example: `  nimbus dlq purge resize`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var out struct {
				Purged int `json:"purged"`
			}
			if err := app.call(ctx, "DELETE", dlqPath(args[0]), nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "purged %d dead letter(s) of %s\n", out.Purged, args[0])
			return nil
		},
	}
	root.AddCommand(ls, replay, purge)
	return root
}
