// Package cli is the nimbus command line: the server commands (serve, dev) and
// the client commands that talk to a server's REST API.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/spf13/cobra"
)

// commands holds the constructors of every top-level command. Each command
// group registers itself from its own file's init, so groups stay independent.
var commands []func(*App) *cobra.Command

// register adds a top-level command constructor.
func register(f func(*App) *cobra.Command) { commands = append(commands, f) }

// App is one run of the CLI: its streams and the global flags.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Server is the base URL of the Nimbus server (--server, NIMBUS_URL).
	Server string
	// Key is the API key (--key, NIMBUS_KEY, or the admin.key of the local data dir).
	Key string
	// Output is "" (human) or "json" (-o json) for listing and inspecting commands.
	Output string
}

// exitError carries an exit code out of a command.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the CLI with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	root := app.Root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(stderr, "error:", err)
	return 1
}

// Root builds the command tree.
func (app *App) Root() *cobra.Command {
	root := &cobra.Command{
		Use:           "nimbus",
		Short:         "Nimbus: a self-hosted serverless platform in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  nimbus dev                                  # run the platform and deploy the examples
  nimbus deploy hello --code ./examples/hello # build and deploy a Go function
  nimbus invoke hello -d '{"name":"Ada"}'`,
	}
	def := os.Getenv("NIMBUS_URL")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	root.PersistentFlags().StringVar(&app.Server, "server", def, "Nimbus server URL (env NIMBUS_URL)")
	root.PersistentFlags().StringVar(&app.Key, "key", os.Getenv("NIMBUS_KEY"), "API key (env NIMBUS_KEY; default: the local data dir's admin.key)")
	cmds := make([]*cobra.Command, 0, len(commands))
	for _, f := range commands {
		cmds = append(cmds, f(app))
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name() < cmds[j].Name() })
	root.AddCommand(cmds...)
	return root
}

// addOutputFlag adds -o/--output to a listing or inspecting command.
func (app *App) addOutputFlag(c *cobra.Command) {
	c.Flags().StringVarP(&app.Output, "output", "o", "", "output format: json")
}
