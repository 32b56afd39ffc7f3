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

// TenantView is a tenant as /api/v1/tenants shows it.
type TenantView struct {
	Name    string     `json:"name"`
	Created time.Time  `json:"created"`
	Quotas  QuotasView `json:"quotas"`
}

// QuotasView is a tenant's quotas; zero means no limit.
type QuotasView struct {
	MaxConcurrency   int     `json:"max_concurrency,omitempty"`
	MaxRPS           float64 `json:"max_rps,omitempty"`
	MonthlyGBSeconds float64 `json:"monthly_gb_seconds,omitempty"`
	MaxFunctions     int     `json:"max_functions,omitempty"`
	MaxStorageBytes  int64   `json:"max_storage_bytes,omitempty"`
}

func (q QuotasView) String() string {
	s := ""
	add := func(name string, v any, set bool) {
		if set {
			if s != "" {
				s += " "
			}
			s += fmt.Sprintf("%s=%v", name, v)
		}
	}
	add("concurrency", q.MaxConcurrency, q.MaxConcurrency > 0)
	add("rps", q.MaxRPS, q.MaxRPS > 0)
	add("gb-s/month", q.MonthlyGBSeconds, q.MonthlyGBSeconds > 0)
	add("functions", q.MaxFunctions, q.MaxFunctions > 0)
	add("storage", q.MaxStorageBytes, q.MaxStorageBytes > 0)
	if s == "" {
		return "-"
	}
	return s
}

func init() { register(newTenantCmd) }

func addQuotaFlags(c *cobra.Command, q *QuotasView) {
	c.Flags().IntVar(&q.MaxConcurrency, "max-concurrency", 0, "most executions running at once (0: no limit)")
	c.Flags().Float64Var(&q.MaxRPS, "max-rps", 0, "most invocations per second (0: no limit)")
	c.Flags().Float64Var(&q.MonthlyGBSeconds, "monthly-gb-seconds", 0, "compute allowance per month in GB-seconds (0: no limit)")
	c.Flags().IntVar(&q.MaxFunctions, "max-functions", 0, "most functions (0: no limit)")
	c.Flags().Int64Var(&q.MaxStorageBytes, "max-storage-bytes", 0, "most bytes of KV and object storage (0: no limit)")
}

func newTenantCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants (isolated owners of functions, data, keys and usage); needs an admin key",
		Example: `  nimbus tenant create acme --max-concurrency 50 --max-functions 20
  nimbus tenant ls
  nimbus tenant quotas acme --max-rps 100
  nimbus tenant rm acme`,
	}

	var q QuotasView
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a tenant, optionally with quotas",
		Example: "  nimbus tenant create acme\n  nimbus tenant create acme --max-concurrency 50 --monthly-gb-seconds 400000",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var t TenantView
			if err := app.call(ctx, http.MethodPost, "/api/v1/tenants", map[string]any{"name": args[0], "quotas": q}, &t); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(t)
			}
			fmt.Fprintf(app.Stdout, "created tenant %s (quotas: %s)\ngive it a key: nimbus key create --tenant %s --scopes deploy,invoke,read\n", t.Name, t.Quotas, t.Name)
			return nil
		},
	}
	addQuotaFlags(create, &q)
	app.addOutputFlag(create)

	var uq QuotasView
	quotas := &cobra.Command{
		Use:     "quotas NAME",
		Short:   "Replace a tenant's quotas (flags not given become 0: no limit)",
		Example: "  nimbus tenant quotas acme --max-concurrency 100 --max-rps 50",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var t TenantView
			if err := app.call(ctx, http.MethodPut, "/api/v1/tenants/"+url.PathEscape(args[0])+"/quotas", uq, &t); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(t)
			}
			fmt.Fprintf(app.Stdout, "tenant %s quotas: %s\n", t.Name, t.Quotas)
			return nil
		},
	}
	addQuotaFlags(quotas, &uq)
	app.addOutputFlag(quotas)

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tenants and their quotas",
		Example: "  nimbus tenant ls\n  nimbus tenant ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, "/api/v1/tenants")
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Tenants []TenantView `json:"tenants"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the tenant list: %w", err)
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tQUOTAS")
			for _, t := range list.Tenants {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Created.Local().Format(time.DateTime), t.Quotas)
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(ls)

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a tenant with its API keys and secrets",
		Example: "  nimbus tenant rm acme",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(60 * time.Second)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, "/api/v1/tenants/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "deleted tenant %s\n", args[0])
			return nil
		},
	}
	root.AddCommand(create, ls, quotas, rm)
	return root
}
