package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// FunctionView is a function as GET /api/v1/functions[/{name}] shows it.
type FunctionView struct {
	Name      string                    `json:"name"`
	Tenant    string                    `json:"tenant"`
	Created   time.Time                 `json:"created"`
	Updated   time.Time                 `json:"updated"`
	Latest    int                       `json:"latest"`
	Aliases   map[string]registry.Alias `json:"aliases"`
	Runtime   string                    `json:"runtime"`
	URL       string                    `json:"url"`
	Config    registry.Config           `json:"config"`
	Instances Instances                 `json:"instances"`
	InFlight  int                       `json:"in_flight"`
}

// Instances counts a function's instances by state.
type Instances struct {
	Starting int `json:"starting"`
	Idle     int `json:"idle"`
	Busy     int `json:"busy"`
	Desired  int `json:"desired"`
}

func init() {
	register(newLsCmd)
	register(newGetCmd)
	register(newRmCmd)
	register(newVersionsCmd)
	register(newAliasCmd)
}

// fnPath is the API path of a function.
func fnPath(name string) string { return "/api/v1/functions/" + url.PathEscape(name) }

// getRaw fetches path and returns the JSON as it came.
func (app *App) getRaw(cmd *cobra.Command, path string) (json.RawMessage, error) {
	ctx, cancel := cmdContext(30 * time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := app.call(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// printRaw prints raw JSON indented (for -o json).
func (app *App) printRaw(raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return app.printJSON(v)
}

func checkOutput(app *App) error {
	switch app.Output {
	case "", "json":
		return nil
	}
	return fmt.Errorf("-o %q: the only output format is json", app.Output)
}

func newLsCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List functions",
		Example: `  nimbus ls
  nimbus ls -o json | jq -r '.functions[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, "/api/v1/functions")
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Functions []FunctionView `json:"functions"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the function list: %w", err)
			}
			if len(list.Functions) == 0 {
				fmt.Fprintln(app.Stdout, "no functions yet: deploy one with `nimbus deploy NAME --code PATH`")
				return nil
			}
			sort.Slice(list.Functions, func(i, j int) bool { return list.Functions[i].Name < list.Functions[j].Name })
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tVERSION\tINSTANCES\tURL")
			for _, f := range list.Functions {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Name, orDash(f.runtime()), f.liveVersion(), f.Instances.summary(), app.urlOf(&f))
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(c)
	return c
}

func (f *FunctionView) runtime() string {
	if f.Runtime != "" {
		return f.Runtime
	}
	return f.Config.Runtime
}

// liveVersion says which version the live alias serves: "3", or "2 (latest 3)".
func (f *FunctionView) liveVersion() string {
	a, ok := f.Aliases[registry.LiveAlias]
	if !ok || a.Version == 0 || a.Version == f.Latest {
		return strconv.Itoa(f.Latest)
	}
	return fmt.Sprintf("%d (latest %d)", a.Version, f.Latest)
}

func (app *App) urlOf(f *FunctionView) string {
	if f.URL != "" {
		return f.URL
	}
	return app.functionURL(f.Name)
}

func (n Instances) summary() string {
	total := n.Starting + n.Idle + n.Busy
	if n.Busy == 0 && n.Starting == 0 {
		return strconv.Itoa(total)
	}
	var parts []string
	if n.Busy > 0 {
		parts = append(parts, fmt.Sprintf("%d busy", n.Busy))
	}
	if n.Starting > 0 {
		parts = append(parts, fmt.Sprintf("%d starting", n.Starting))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGetCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:     "get NAME",
		Short:   "Show a function: configuration, aliases, instances and URL",
		Example: "  nimbus get hello\n  nimbus get hello -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, fnPath(args[0]))
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var f FunctionView
			if err := json.Unmarshal(raw, &f); err != nil {
				return fmt.Errorf("decoding function %s: %w", args[0], err)
			}
			app.printFunction(&f)
			return nil
		},
	}
	app.addOutputFlag(c)
	return c
}

func (app *App) printFunction(f *FunctionView) {
	w := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "name:\t%s\n", f.Name)
	if f.Tenant != "" && f.Tenant != registry.DefaultTenant {
		fmt.Fprintf(w, "tenant:\t%s\n", f.Tenant)
	}
	fmt.Fprintf(w, "url:\t%s\n", app.urlOf(f))
	fmt.Fprintf(w, "runtime:\t%s\n", orDash(f.runtime()))
	fmt.Fprintf(w, "latest version:\t%d\n", f.Latest)
	if !f.Created.IsZero() {
		fmt.Fprintf(w, "created:\t%s\n", f.Created.Local().Format(time.DateTime))
	}
	if !f.Updated.IsZero() {
		fmt.Fprintf(w, "updated:\t%s\n", f.Updated.Local().Format(time.DateTime))
	}
	names := make([]string, 0, len(f.Aliases))
	for n := range f.Aliases {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		label := ""
		if i == 0 {
			label = "aliases:"
		}
		fmt.Fprintf(w, "%s\t%s → %s\n", label, n, describeAlias(f.Aliases[n]))
	}
	n := f.Instances
	fmt.Fprintf(w, "instances:\t%d starting, %d idle, %d busy (desired %d); %d in flight\n", n.Starting, n.Idle, n.Busy, n.Desired, f.InFlight)
	_ = w.Flush()
	lines := configLines(f.Config)
	if len(lines) > 0 {
		fmt.Fprintln(app.Stdout, "config:")
		w = tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
		for _, l := range lines {
			fmt.Fprintf(w, "  %s:\t%s\n", l[0], l[1])
		}
		_ = w.Flush()
	}
}

func describeAlias(a registry.Alias) string {
	s := "latest version"
	if a.Version > 0 {
		s = "version " + strconv.Itoa(a.Version)
	}
	if a.Weight > 0 && a.Additional > 0 {
		s += fmt.Sprintf(" (%g%% to version %d)", a.Weight*100, a.Additional)
	}
	return s
}

// configLines flattens the set fields of a config into sorted key/value pairs.
func configLines(c registry.Config) [][2]string {
	b, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	var out [][2]string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				if prefix == "env" {
					out = append(out, [2]string{p, fmt.Sprint(x[k])})
					continue
				}
				walk(p, x[k])
			}
		case []any:
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = fmt.Sprint(e)
			}
			if len(parts) > 0 {
				out = append(out, [2]string{prefix, strings.Join(parts, ", ")})
			}
		case string:
			if x != "" && x != "0s" {
				out = append(out, [2]string{prefix, x})
			}
		case nil:
		default:
			out = append(out, [2]string{prefix, fmt.Sprint(x)})
		}
	}
	walk("", m)
	return out
}

func newRmCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Remove functions with all their versions and aliases",
		Example: "  nimbus rm hello\n  nimbus rm old-a old-b",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			for _, name := range args {
				if err := app.call(ctx, http.MethodDelete, fnPath(name), nil, nil); err != nil {
					return fmt.Errorf("removing %s: %w", name, err)
				}
				fmt.Fprintf(app.Stdout, "removed %s\n", name)
			}
			return nil
		},
	}
}

func newVersionsCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:     "versions NAME",
		Short:   "List the versions of a function",
		Example: "  nimbus versions hello\n  nimbus versions hello -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			raw, err := app.getRaw(cmd, fnPath(args[0])+"/versions")
			if err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printRaw(raw)
			}
			var list struct {
				Versions []Version `json:"versions"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decoding the versions of %s: %w", args[0], err)
			}
			sort.Slice(list.Versions, func(i, j int) bool { return list.Versions[i].Number > list.Versions[j].Number })
			return printVersions(app.Stdout, list.Versions)
		},
	}
	app.addOutputFlag(c)
	return c
}

func printVersions(out io.Writer, vs []Version) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCREATED\tRUNTIME\tSIZE\tDIGEST")
	for _, v := range vs {
		d := v.Digest
		if len(d) > len("sha256:")+12 {
			d = d[:len("sha256:")+12]
		}
		created := "-"
		if !v.Created.IsZero() {
			created = v.Created.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.Number, created, orDash(v.Config.Runtime), humanBytes(v.Size), d)
	}
	return tw.Flush()
}

func newAliasCmd(app *App) *cobra.Command {
	var split string
	var del bool
	c := &cobra.Command{
		Use:   "alias NAME ALIAS VERSION",
		Short: "Point an alias of a function at a version (optionally splitting traffic)",
		Long: `Point ALIAS of function NAME at VERSION ("latest" or 0 follows the newest
version). --split VERSION:WEIGHT sends that share (0..1) of the traffic to a
second version. Call a pinned alias as /fn/NAME@ALIAS. --delete removes an alias
(the "live" alias cannot be removed).`,
		Example: `  nimbus alias hello live 3              # pin live to version 3
  nimbus alias hello live latest         # live follows the newest version again
  nimbus alias hello canary 4 --split 5:0.1
  nimbus alias hello canary --delete`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, alias := args[0], args[1]
			if err := registry.CheckName("alias", alias); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			p := fnPath(name) + "/aliases/" + url.PathEscape(alias)
			if del {
				if len(args) != 2 {
					return errors.New("--delete takes only NAME and ALIAS")
				}
				if err := app.call(ctx, http.MethodDelete, p, nil, nil); err != nil {
					return fmt.Errorf("removing alias %s of %s: %w", alias, name, err)
				}
				fmt.Fprintf(app.Stdout, "removed alias %s of %s\n", alias, name)
				return nil
			}
			if len(args) != 3 {
				return errors.New("alias needs NAME ALIAS VERSION (or --delete)")
			}
			var a registry.Alias
			var err error
			if a.Version, err = parseVersion(args[2]); err != nil {
				return err
			}
			if split != "" {
				v, w, ok := strings.Cut(split, ":")
				if !ok {
					return fmt.Errorf("--split %q: write it as VERSION:WEIGHT, e.g. 4:0.1", split)
				}
				if a.Additional, err = parseVersion(v); err != nil || a.Additional == 0 {
					return fmt.Errorf("--split %q: the version must be a number ≥ 1", split)
				}
				if a.Weight, err = strconv.ParseFloat(w, 64); err != nil || a.Weight <= 0 || a.Weight >= 1 {
					return fmt.Errorf("--split %q: the weight must be a number between 0 and 1, e.g. 0.1", split)
				}
			}
			var got registry.Alias
			if err := app.call(ctx, http.MethodPut, p, a, &got); err != nil {
				return fmt.Errorf("setting alias %s of %s: %w", alias, name, err)
			}
			fmt.Fprintf(app.Stdout, "alias %s of %s → %s\n", alias, name, describeAlias(got))
			return nil
		},
	}
	c.Flags().StringVar(&split, "split", "", "send a share of traffic to another version: VERSION:WEIGHT")
	c.Flags().BoolVar(&del, "delete", false, "remove the alias")
	return c
}

func parseVersion(s string) (int, error) {
	if s == "latest" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("version %q: give a version number or \"latest\"", s)
	}
	return n, nil
}
