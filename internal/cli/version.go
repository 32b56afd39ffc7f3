package cli

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// BuildVersion is the version of this nimbus binary. Release builds set it
// with -ldflags "-X github.com/nimbusfn/nimbus/internal/cli.BuildVersion=v1.2.3";
// other builds report the module version or the VCS revision they come from.
var BuildVersion = ""

// BinaryVersion returns BuildVersion, or what the build info says.
func BinaryVersion() string {
	if BuildVersion != "" {
		return BuildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}

// ServerInfo is what GET /api/v1/info answers.
type ServerInfo struct {
	Version  string   `json:"version"`
	Node     string   `json:"node"`
	Runtimes []string `json:"runtimes"`
}

func init() { register(newVersionCmd) }

func newVersionCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:     "version",
		Short:   "Show the version of this CLI and of the server it talks to",
		Example: "  nimbus version\n  nimbus version --server http://10.0.0.5:8080 -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(3 * time.Second)
			defer cancel()
			var info ServerInfo
			serr := app.call(ctx, http.MethodGet, "/api/v1/info", nil, &info)
			if app.Output == "json" {
				out := map[string]any{"cli": map[string]string{"version": BinaryVersion()}}
				if serr == nil {
					out["server"] = map[string]any{"url": app.Server, "version": info.Version, "node": info.Node, "runtimes": info.Runtimes}
				} else {
					out["server"] = map[string]any{"url": app.Server, "error": serr.Error()}
				}
				return app.printJSON(out)
			}
			fmt.Fprintf(app.Stdout, "cli:     %s\n", BinaryVersion())
			if serr != nil {
				fmt.Fprintf(app.Stdout, "server:  not reachable: %v\n", serr)
				return nil
			}
			fmt.Fprintf(app.Stdout, "server:  %s at %s", orDash(info.Version), app.Server)
			if info.Node != "" {
				fmt.Fprintf(app.Stdout, " (node %s)", info.Node)
			}
			fmt.Fprintln(app.Stdout)
			if len(info.Runtimes) > 0 {
				fmt.Fprintf(app.Stdout, "runtimes: %s\n", strings.Join(info.Runtimes, ", "))
			}
			return nil
		},
	}
	app.addOutputFlag(c)
	return c
}
