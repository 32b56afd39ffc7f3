package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// SecretView is a secret as GET /api/v1/secrets lists it: never its value.
type SecretView struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func init() { register(newSecretCmd) }

// tenantQuery is "?tenant=T" for admins acting on another tenant, or "".
func tenantQuery(t string) string {
	if t == "" {
		return ""
	}
	return "?tenant=" + url.QueryEscape(t)
}

func newSecretCmd(app *App) *cobra.Command {
	var tenant string
	root := &cobra.Command{
		Use:   "secret",
		Short: "Manage the tenant's secrets (encrypted at rest, never shown again, delivered to functions that name them)",
		Example: `  nimbus secret set DB_PASSWORD 'p@ss'
  nimbus secret set TLS_KEY --from-file ./key.pem
  vault read -field=pw db | nimbus secret set DB_PASSWORD -
  nimbus secret ls
  nimbus secret rm DB_PASSWORD`,
	}
	root.PersistentFlags().StringVar(&tenant, "tenant", "", "act on this tenant (admin keys only; default: the key's tenant)")

	var fromFile string
	set := &cobra.Command{
		Use:   "set NAME [VALUE | --from-file F | -]",
		Short: "Create or replace a secret (from the argument, a file, or stdin with -)",
		Long: `Create or replace a secret. The value comes from the second argument, from
--from-file, or from stdin when the argument is "-" or missing (one trailing
newline is removed from stdin, none from files). Values are at most 64 KB.`,
		Example: `  nimbus secret set API_TOKEN abc123
  nimbus secret set TLS_KEY --from-file ./key.pem
  echo -n "$TOKEN" | nimbus secret set API_TOKEN -`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value string
			switch {
			case fromFile != "" && len(args) == 2:
				return fmt.Errorf("give the value either as an argument or with --from-file, not both")
			case fromFile != "":
				b, err := os.ReadFile(fromFile)
				if err != nil {
					return fmt.Errorf("reading secret %s: %w", args[0], err)
				}
				value = string(b)
			case len(args) == 2 && args[1] != "-":
				value = args[1]
			default:
				b, err := io.ReadAll(io.LimitReader(app.Stdin, 1<<20))
				if err != nil {
					return fmt.Errorf("reading secret %s from stdin: %w", args[0], err)
				}
				value = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var sv SecretView
			path := "/api/v1/secrets/" + url.PathEscape(args[0]) + tenantQuery(tenant)
			if err := app.call(ctx, http.MethodPut, path, map[string]string{"value": value}, &sv); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "set secret %s (%d bytes)\n", sv.Name, len(value))
			return nil
		},
	}
	set.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List secret names (values are never shown)",
		Example: "  nimbus secret ls\n  nimbus secret ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, "/api/v1/secrets"+tenantQuery(tenant))
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Secrets []SecretView `json:"secrets"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the secret list: %w", err)
			}
			if len(list.Secrets) == 0 {
				fmt.Fprintln(app.Stdout, "no secrets yet: add one with `nimbus secret set NAME VALUE`")
				return nil
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tUPDATED")
			for _, s := range list.Secrets {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Created.Local().Format(time.DateTime), s.Updated.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(ls)

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a secret",
		Example: "  nimbus secret rm DB_PASSWORD",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, "/api/v1/secrets/"+url.PathEscape(args[0])+tenantQuery(tenant), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "deleted secret %s\n", args[0])
			return nil
		},
	}
	root.AddCommand(set, ls, rm)
	return root
}
