package cli

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
)

func init() { register(newDoctorCmd) }

func newDoctorCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Report what this machine offers Nimbus: isolation layers and toolchains",
		Long: `Report the process isolation layers Nimbus detects on this machine (cgroups, namespaces,
unprivileged user, rlimits) and the tools that some runtimes and commands use (go for building
Go functions, python3 and node for the managed runtimes). Missing layers are not fatal: the
server says so at start and keeps going.`,
		Example: `  nimbus doctor`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			fmt.Fprintln(app.Stdout, "Process isolation:")
			for _, line := range strings.Split(strings.TrimRight(sandbox.Probe().String(), "\n"), "\n") {
				fmt.Fprintln(app.Stdout, "  "+line)
			}
			fmt.Fprintln(app.Stdout, "Tools:")
			for _, t := range []struct{ bin, use string }{
				{"go", "building Go functions (nimbus build, deploy --code DIR)"},
				{"python3", "the python3 runtime"},
				{"node", "the nodejs runtime"},
			} {
				if p, err := exec.LookPath(t.bin); err == nil {
					fmt.Fprintf(app.Stdout, "  ok       %-8s %s (%s)\n", t.bin, p, t.use)
				} else {
					fmt.Fprintf(app.Stdout, "  missing  %-8s needed for %s\n", t.bin, t.use)
				}
			}
			return nil
		},
	}
}
