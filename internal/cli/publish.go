package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newPublishCmd) }

func newPublishCmd(app *App) *cobra.Command {
	var data, typ, source, subject, id, contentType string
	c := &cobra.Command{
		Use:   "publish TOPIC [-d DATA]",
		Short: "Publish a CloudEvent to a topic; every subscribed function is invoked",
		Long: `Publish a CloudEvent 1.0 to a declared topic (HTTP binary mode). The data comes
from -d (a string, @file, or @- for stdin); its content type is guessed unless
--content-type is given. The id defaults to a random one.`,
		Example: `  nimbus topic create orders
  nimbus publish orders -d '{"order":42}' --type order.created --source /shop
  nimbus publish orders -d @event.json --type order.created --subject eu/fr/42`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := readData(data, app.Stdin)
			if err != nil {
				return err
			}
			if id == "" {
				var b [12]byte
				_, _ = rand.Read(b[:])
				id = hex.EncodeToString(b[:])
			}
			h := http.Header{}
			h.Set("ce-specversion", "1.0")
			h.Set("ce-id", id)
			h.Set("ce-source", source)
			h.Set("ce-type", typ)
			if subject != "" {
				h.Set("ce-subject", subject)
			}
			h.Set("ce-time", time.Now().UTC().Format(time.RFC3339Nano))
			if contentType == "" && len(body) > 0 {
				contentType = guessContentType(body)
			}
			if contentType != "" {
				h.Set("Content-Type", contentType)
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			resp, err := app.request(ctx, "POST", "/events/"+url.PathEscape(args[0]), bytes.NewReader(body), h)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Fprintf(app.Stdout, "published event %s to %s\n", id, args[0])
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&data, "data", "d", "", "event data: a string, @file, or @- for stdin")
	f.StringVar(&typ, "type", "nimbus.cli.event", "CloudEvent type")
	f.StringVar(&source, "source", "nimbus-cli", "CloudEvent source")
	f.StringVar(&subject, "subject", "", "CloudEvent subject")
	f.StringVar(&id, "id", "", "CloudEvent id (default: random)")
	f.StringVar(&contentType, "content-type", "", "media type of the data (default: guessed)")
	return c
}
