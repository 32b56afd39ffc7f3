package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// KeyView is an API key as /api/v1/keys shows it (the key itself only once).
type KeyView struct {
	ID        string     `json:"id"`
	Key       string     `json:"key,omitempty"`
	Tenant    string     `json:"tenant"`
	Name      string     `json:"name,omitempty"`
	Scopes    []string   `json:"scopes"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires,omitempty"`
	Revoked   bool       `json:"revoked,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func (k *KeyView) state(now time.Time) string {
	switch {
	case k.Revoked:
		return "revoked"
	case k.Expires != nil && !now.Before(*k.Expires):
		return "expired"
	case k.Expires != nil:
		return "expires " + k.Expires.Local().Format(time.DateTime)
	}
	return "active"
}

func init() { register(newKeyCmd) }

func newKeyCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "key",
		Short: "Manage API keys (a tenant plus scopes: admin, deploy, invoke, read); needs an admin key",
		Example: `  nimbus key create --tenant acme --scopes deploy,invoke --expires 720h --name ci
  nimbus key ls --tenant acme
  nimbus key revoke 3f9c0a1b2c3d4e5f`,
	}

	var tenant, expires, name string
	var scopes []string
	create := &cobra.Command{
		Use:   "create --tenant T --scopes S[,S…] [--expires 720h] [--name N]",
		Short: "Issue an API key; it is shown once, so store it now",
		Example: `  nimbus key create --tenant acme --scopes deploy,invoke
  nimbus key create --tenant acme --scopes read --expires 30d --name dashboard
  NIMBUS_KEY=$(nimbus key create --tenant acme --scopes invoke -o json | jq -r .key)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			if len(scopes) == 0 {
				return fmt.Errorf("--scopes is required: a comma-separated list of admin, deploy, invoke, read")
			}
			body := map[string]any{"tenant": tenant, "scopes": scopes, "name": name}
			if expires != "" {
				body["expires_in"] = expires
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var k KeyView
			if err := app.call(ctx, http.MethodPost, "/api/v1/keys", body, &k); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(k)
			}
			fmt.Fprintln(app.Stdout, k.Key)
			fmt.Fprintf(app.Stderr, "key %s for tenant %s, scopes %s, %s.\nThis is the only time the key is shown: store it now (use it with --key or NIMBUS_KEY).\n",
				k.ID, k.Tenant, strings.Join(k.Scopes, ","), k.state(time.Now()))
			return nil
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant that owns the key (default: the caller's tenant)")
	create.Flags().StringSliceVar(&scopes, "scopes", nil, "comma-separated scopes: admin, deploy, invoke, read")
	create.Flags().StringVar(&expires, "expires", "", `lifetime, like "720h" or "30d" (default: never expires)`)
	create.Flags().StringVar(&name, "name", "", "a label to recognise the key by")
	app.addOutputFlag(create)

	var lsTenant string
	ls := &cobra.Command{
		Use:     "ls [--tenant T]",
		Aliases: []string{"list"},
		Short:   "List API keys (never the keys themselves)",
		Example: "  nimbus key ls\n  nimbus key ls --tenant acme -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			path := "/api/v1/keys"
			if lsTenant != "" {
				path += "?tenant=" + url.QueryEscape(lsTenant)
			}
			raw, err := app.getRaw(cmd, path)
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Keys []KeyView `json:"keys"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the key list: %w", err)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTENANT\tSCOPES\tNAME\tCREATED\tSTATE")
			for _, k := range list.Keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Tenant, strings.Join(k.Scopes, ","), orDash(k.Name), k.Created.Local().Format(time.DateTime), k.state(now))
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&lsTenant, "tenant", "", "only this tenant's keys")
	app.addOutputFlag(ls)

	revoke := &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"rm"},
		Short:   "Revoke an API key at once (on every node within the watch latency)",
		Example: "  nimbus key revoke 3f9c0a1b2c3d4e5f",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, "/api/v1/keys/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "revoked key %s\n", args[0])
			return nil
		},
	}
	root.AddCommand(create, ls, revoke)
	return root
}
