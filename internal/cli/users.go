package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// AppUserView is an app end user as /api/v1/users shows it.
type AppUserView struct {
	ID      string         `json:"id"`
	Email   string         `json:"email"`
	Created time.Time      `json:"created"`
	Claims  map[string]any `json:"claims,omitempty"`
}

func init() { register(newUsersCmd) }

func newUsersCmd(app *App) *cobra.Command {
	var tenant string
	root := &cobra.Command{
		Use:   "users",
		Short: "Operator view of the tenant's app users (end-user auth at /auth/{tenant}/…)",
		Example: `  nimbus users ls
  nimbus users claims 9f2c…e1 '{"role":"editor"}'
  nimbus users rm 9f2c…e1`,
	}
	root.PersistentFlags().StringVar(&tenant, "tenant", "", "act on this tenant (admin keys only; default: the key's tenant)")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List app users",
		Example: "  nimbus users ls\n  nimbus users ls --tenant acme -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, "/api/v1/users"+tenantQuery(tenant))
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Users []AppUserView `json:"users"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the user list: %w", err)
			}
			if len(list.Users) == 0 {
				fmt.Fprintln(app.Stdout, "no app users yet: they sign up with POST /auth/{tenant}/signup")
				return nil
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEMAIL\tCREATED\tCLAIMS")
			for _, u := range list.Users {
				claims := "-"
				if len(u.Claims) > 0 {
					b, _ := json.Marshal(u.Claims)
					claims = string(b)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Created.Local().Format(time.DateTime), claims)
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(ls)

	claims := &cobra.Command{
		Use:     "claims ID JSON",
		Short:   "Replace a user's custom claims (in access tokens issued from now on)",
		Example: `  nimbus users claims 9f2c…e1 '{"role":"editor","plan":"pro"}'`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c map[string]any
			if err := json.Unmarshal([]byte(args[1]), &c); err != nil {
				return fmt.Errorf("claims must be a JSON object like '{\"role\":\"editor\"}': %w", err)
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var u AppUserView
			if err := app.call(ctx, http.MethodPut, "/api/v1/users/"+url.PathEscape(args[0])+"/claims"+tenantQuery(tenant), c, &u); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "set claims of %s (%s)\n", u.ID, u.Email)
			return nil
		},
	}

	rm := &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"delete"},
		Short:   "Delete an app user (its sessions end; access tokens lapse within 15 minutes)",
		Example: "  nimbus users rm 9f2c…e1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0])+tenantQuery(tenant), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "deleted user %s\n", args[0])
			return nil
		},
	}
	root.AddCommand(ls, claims, rm)
	return root
}
