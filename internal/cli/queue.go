package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newQueueCmd) }

func newQueueCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "queue",
		Short: "Declare, list and send to queues (consumed in batches by a queue trigger)",
		Example: `  nimbus queue create jobs
  nimbus queue send jobs -d '[{"n":1},{"n":2}]'
  nimbus trigger add worker --queue jobs --batch 10 --window 1s`,
	}
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Declare a queue (idempotent)",
		Example: `  nimbus queue create jobs`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, "PUT", "/api/v1/queues/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "queue %s ready\n", args[0])
			return nil
		},
	}
	rm := &cobra.Command{
		Use:     "rm NAME",
		Short:   "Delete a queue and its messages (refused while a trigger consumes it)",
		Example: `  nimbus queue rm jobs`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, "DELETE", "/api/v1/queues/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "queue %s deleted\n", args[0])
			return nil
		},
	}
	var data string
	send := &cobra.Command{
		Use:   "send NAME -d JSON",
		Short: "Send one JSON message, or a JSON array of messages, to a queue",
		Example: `  nimbus queue send jobs -d '{"resize":"a.jpg"}'
  nimbus queue send jobs -d @batch.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := readData(data, app.Stdin)
			if err != nil {
				return err
			}
			if len(bytes.TrimSpace(body)) == 0 || !json.Valid(body) {
				return fmt.Errorf("-d must be one JSON value or a JSON array of messages")
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			resp, err := app.request(ctx, "POST", "/api/v1/queues/"+url.PathEscape(args[0])+"/messages", bytes.NewReader(body), http.Header{"Content-Type": {"application/json"}})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var out struct {
				IDs []string `json:"ids"`
			}
			data, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(data, &out); err != nil {
				return fmt.Errorf("decoding the server's answer: %w", err)
			}
			fmt.Fprintf(app.Stdout, "sent %d message(s) to %s: %s\n", len(out.IDs), args[0], strings.Join(out.IDs, " "))
			return nil
		},
	}
	send.Flags().StringVarP(&data, "data", "d", "", "message(s): JSON, @file, or @- for stdin")
	root.AddCommand(create, listResources(app, "queues"), send, rm)
	return root
}
