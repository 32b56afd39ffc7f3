package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/stack"
)

func init() { register(newDevCmd) }

func newDevCmd(app *App) *cobra.Command {
	var f serveFlags
	var stackFile string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run Nimbus locally and deploy the examples",
		Long: `Run Nimbus on an embedded default (data in ./.nimbus, HTTP on 127.0.0.1:8080, the S3 API on
127.0.0.1:9000), build and deploy every function of the examples' stack file, and print the URL
of each. Ctrl-C stops it; the functions stay deployed for the next start.`,
		Example: `  go run ./cmd/nimbus dev
  nimbus dev --listen 127.0.0.1:9090 --stack ./my-app/nimbus.yaml`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := f.config(os.Stderr)
			if err != nil {
				return err
			}
			s, err := server.New(cfg)
			if err != nil {
				return err
			}
			return runServer(s, func(s *server.Server) error {
				app.Server = s.URL()
				app.Key = s.AdminKey()
				fmt.Fprintf(app.Stdout, "Nimbus %s is running at %s (data in %s)\n", server.Version, s.URL(), s.DataDir())
				if _, err := os.Stat(stackFile); err != nil {
					fmt.Fprintf(app.Stdout, "no stack file at %s: nothing to deploy\n", stackFile)
					return nil
				}
				fmt.Fprintf(app.Stdout, "deploying the functions of %s …\n", stackFile)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				var progress = app.Stderr
				if !isTerminal(app.Stderr) {
					progress = nil
				}
				st, err := stack.Load(stackFile)
				if err != nil {
					return err
				}
				// One function failing to build or deploy (a missing
				// interpreter, say) must not keep the others from running.
				failed := 0
				for _, name := range st.Names() {
					if err := app.deployStack(ctx, stackFile, []string{name}, progress); err != nil {
						failed++
						fmt.Fprintf(app.Stderr, "could not deploy %s: %v\n", name, err)
					}
				}
				if failed > 0 {
					fmt.Fprintf(app.Stdout, "%d function(s) could not be deployed; see above\n", failed)
				}
				fmt.Fprintf(app.Stdout, "\nready: try  curl '%s/fn/hello?name=Ada'\n", s.URL())
				fmt.Fprintf(app.Stdout, "API key for other machines: %s\n", filepath.Join(s.DataDir(), "admin.key"))
				return nil
			})
		},
	}
	f.add(c, "127.0.0.1:8080")
	c.Flags().StringVar(&stackFile, "stack", filepath.Join("examples", "nimbus.yaml"), "stack file whose functions are deployed at start")
	c.Flags().Lookup("s3-listen").DefValue = "127.0.0.1:9000"
	_ = c.Flags().Set("s3-listen", "127.0.0.1:9000")
	// On a laptop the webhook receiver under test is usually on localhost.
	c.Flags().Lookup("callback-loopback").DefValue = "true"
	_ = c.Flags().Set("callback-loopback", "true")
	return c
}
