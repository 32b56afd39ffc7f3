package cli

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// ResourceView is a declared topic or queue.
type ResourceView struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

func init() { register(newTopicCmd) }

func newTopicCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "topic",
		Short: "Declare and list topics (publish to them with nimbus publish)",
		Example: `  nimbus topic create orders
  nimbus topic ls
  nimbus trigger add shipping --topic orders --type order.created`,
	}
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Declare a topic (idempotent)",
		Example: `  nimbus topic create orders`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, "PUT", "/api/v1/topics/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "topic %s ready\n", args[0])
			return nil
		},
	}
	rm := &cobra.Command{
		Use:     "rm NAME",
		Short:   "Delete a topic that no trigger subscribes to",
		Example: `  nimbus topic rm orders`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, "DELETE", "/api/v1/topics/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "topic %s deleted\n", args[0])
			return nil
		},
	}
	root.AddCommand(create, listResources(app, "topics"), rm)
	return root
}

// listResources is `ls` for topics or queues.
func listResources(app *App, kind string) *cobra.Command {
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the tenant's " + kind,
		Example: "  nimbus " + kind[:len(kind)-1] + " ls\n  nimbus " + kind[:len(kind)-1] + " ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			out := map[string][]ResourceView{}
			if err := app.call(ctx, "GET", "/api/v1/"+kind, nil, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out[kind])
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED")
			for _, r := range out[kind] {
				fmt.Fprintf(tw, "%s\t%s\n", r.Name, r.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(c)
	return c
}
