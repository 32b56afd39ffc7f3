package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newObjCmd) }

func objPath(bucket, key string) string {
	p := "/api/v1/objects/" + url.PathEscape(bucket)
	if key != "" {
		p += "/" + escapeKey(key)
	}
	return p
}

// splitObjArg splits BUCKET/KEY.
func splitObjArg(s string) (bucket, key string) {
	b, k, _ := strings.Cut(strings.TrimPrefix(s, "/"), "/")
	return b, k
}

type objInfo struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"`
	ContentType  string            `json:"content_type"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	LastModified time.Time         `json:"last_modified"`
}

func newObjCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "obj",
		Short: "Files: per-tenant object storage (also reachable over the S3 API)",
		Example: `  nimbus obj mb photos
  nimbus obj put ./cat.jpg photos/2024/cat.jpg
  nimbus obj ls photos/2024/
  nimbus obj get photos/2024/cat.jpg ./copy.jpg
  nimbus obj presign photos/2024/cat.jpg --expires 1h
  nimbus obj credentials -o json   # keys for aws/minio S3 clients`,
	}

	mb := &cobra.Command{
		Use:     "mb BUCKET",
		Short:   "Make a bucket",
		Example: "  nimbus obj mb photos",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			if err := app.call(ctx, http.MethodPut, objPath(args[0], ""), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "bucket %s created\n", args[0])
			return nil
		},
	}
	rb := &cobra.Command{
		Use:     "rb BUCKET",
		Short:   "Remove an empty bucket",
		Example: "  nimbus obj rb photos",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			if err := app.call(ctx, http.MethodDelete, objPath(args[0], ""), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "bucket %s removed\n", args[0])
			return nil
		},
	}

	var recursive bool
	ls := &cobra.Command{
		Use:     "ls [BUCKET[/PREFIX]]",
		Short:   "List buckets, or the objects of a bucket (folders by '/' unless --recursive)",
		Example: "  nimbus obj ls\n  nimbus obj ls photos/2024/\n  nimbus obj ls photos --recursive -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			if len(args) == 0 {
				var out struct {
					Buckets []struct {
						Name    string    `json:"name"`
						Created time.Time `json:"created"`
					} `json:"buckets"`
				}
				if err := app.call(ctx, http.MethodGet, "/api/v1/objects", nil, &out); err != nil {
					return err
				}
				if app.Output == "json" {
					return app.printJSON(out)
				}
				if len(out.Buckets) == 0 {
					fmt.Fprintln(app.Stdout, "no buckets yet: make one with `nimbus obj mb NAME`")
					return nil
				}
				for _, b := range out.Buckets {
					fmt.Fprintf(app.Stdout, "%s  %s\n", b.Created.Local().Format(time.DateTime), b.Name)
				}
				return nil
			}
			bucket, prefix := splitObjArg(args[0])
			var objs []objInfo
			var prefixes []string
			cursor := ""
			for {
				q := url.Values{}
				if prefix != "" {
					q.Set("prefix", prefix)
				}
				if !recursive {
					q.Set("delimiter", "/")
				}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				var page struct {
					Objects        []objInfo `json:"objects"`
					CommonPrefixes []string  `json:"common_prefixes"`
					NextCursor     string    `json:"next_cursor"`
				}
				if err := app.call(ctx, http.MethodGet, objPath(bucket, "")+"?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				objs = append(objs, page.Objects...)
				prefixes = append(prefixes, page.CommonPrefixes...)
				if cursor = page.NextCursor; cursor == "" {
					break
				}
			}
			if app.Output == "json" {
				if prefixes == nil {
					prefixes = []string{}
				}
				if objs == nil {
					objs = []objInfo{}
				}
				return app.printJSON(map[string]any{"objects": objs, "common_prefixes": prefixes})
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			for _, p := range prefixes {
				fmt.Fprintf(tw, "\tDIR\t%s\n", p)
			}
			for _, o := range objs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", o.LastModified.Local().Format(time.DateTime), o.Size, o.Key)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&recursive, "recursive", "r", false, "list every object under the prefix, not folders")
	app.addOutputFlag(ls)

	var contentType string
	var meta []string
	put := &cobra.Command{
		Use:   "put FILE BUCKET[/KEY]",
		Short: "Upload a file (- for stdin); a KEY ending in / gets the file's name",
		Example: `  nimbus obj put ./cat.jpg photos/2024/
  nimbus obj put report.csv data/in/report.csv --meta source=cli
  tar c . | nimbus obj put - backups/site.tar --content-type application/x-tar`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			bucket, key := splitObjArg(args[1])
			var body io.Reader
			var size int64 = -1
			if args[0] == "-" {
				body = app.Stdin
				if key == "" || strings.HasSuffix(key, "/") {
					return fmt.Errorf("name the key when uploading stdin: BUCKET/KEY")
				}
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				body, size = f, st.Size()
				if key == "" || strings.HasSuffix(key, "/") {
					key += filepath.Base(args[0])
				}
				if contentType == "" {
					contentType = mime.TypeByExtension(filepath.Ext(args[0]))
				}
			}
			h := http.Header{}
			if contentType != "" {
				h.Set("Content-Type", contentType)
			}
			for _, m := range meta {
				k, v, ok := strings.Cut(m, "=")
				if !ok || k == "" {
					return fmt.Errorf("--meta takes key=value, not %q", m)
				}
				h.Set("X-Nimbus-Meta-"+k, v)
			}
			if size >= 0 {
				h.Set("Content-Length", strconv.FormatInt(size, 10))
			}
			resp, err := app.request(ctx, http.MethodPut, objPath(bucket, key), body, h)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var info objInfo
			if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
				return fmt.Errorf("decoding the server's answer: %w", err)
			}
			if app.Output == "json" {
				return app.printJSON(info)
			}
			fmt.Fprintf(app.Stdout, "%s/%s  %d bytes  etag %s\n", bucket, info.Key, info.Size, info.ETag)
			return nil
		},
	}
	put.Flags().StringVar(&contentType, "content-type", "", "Content-Type (default: from the file extension)")
	put.Flags().StringArrayVar(&meta, "meta", nil, "user metadata key=value (repeatable)")
	app.addOutputFlag(put)

	get := &cobra.Command{
		Use:     "get BUCKET/KEY [FILE]",
		Short:   "Download an object to FILE (default: stdout)",
		Example: "  nimbus obj get photos/2024/cat.jpg cat.jpg\n  nimbus obj get data/out/result.json | jq .",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			bucket, key := splitObjArg(args[0])
			if key == "" {
				return fmt.Errorf("name the object as BUCKET/KEY")
			}
			resp, err := app.request(ctx, http.MethodGet, objPath(bucket, key), nil, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if len(args) == 1 || args[1] == "-" {
				_, err = io.Copy(app.Stdout, resp.Body)
				return err
			}
			f, err := os.Create(args[1])
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return fmt.Errorf("downloading %s: %w", args[0], err)
			}
			return f.Close()
		},
	}

	rm := &cobra.Command{
		Use:     "rm BUCKET/KEY...",
		Short:   "Delete objects",
		Example: "  nimbus obj rm photos/2024/cat.jpg photos/2024/dog.jpg",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			for _, a := range args {
				bucket, key := splitObjArg(a)
				if key == "" {
					return fmt.Errorf("name the object as BUCKET/KEY (remove a bucket with `nimbus obj rb`)")
				}
				if err := app.call(ctx, http.MethodDelete, objPath(bucket, key), nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(app.Stdout, "%s deleted\n", a)
			}
			return nil
		},
	}

	var method string
	var expires time.Duration
	presign := &cobra.Command{
		Use:     "presign BUCKET/KEY",
		Short:   "Print a presigned S3 URL that anyone can GET (or PUT) until it expires",
		Example: "  nimbus obj presign photos/2024/cat.jpg\n  nimbus obj presign uploads/new.bin --method PUT --expires 15m",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			bucket, key := splitObjArg(args[0])
			q := url.Values{"bucket": {bucket}, "key": {key}, "method": {strings.ToUpper(method)}, "expires": {strconv.Itoa(int(expires / time.Second))}}
			var out struct {
				URL       string `json:"url"`
				Method    string `json:"method"`
				ExpiresAt string `json:"expires_at"`
			}
			if err := app.call(ctx, http.MethodGet, "/api/v1/objects-presign?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out)
			}
			fmt.Fprintln(app.Stdout, out.URL)
			return nil
		},
	}
	presign.Flags().StringVar(&method, "method", "GET", "GET or PUT")
	presign.Flags().DurationVar(&expires, "expires", time.Hour, "validity (at most 168h)")
	app.addOutputFlag(presign)

	creds := &cobra.Command{
		Use:   "credentials",
		Short: "Print the tenant's S3 access key pair (for aws, minio and other S3 clients)",
		Example: `  nimbus obj credentials
  nimbus obj credentials -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			var out struct {
				AccessKeyID     string `json:"access_key_id"`
				SecretAccessKey string `json:"secret_access_key"`
			}
			if err := app.call(ctx, http.MethodGet, "/api/v1/objects-credentials", nil, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out)
			}
			fmt.Fprintf(app.Stdout, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=us-east-1\n", out.AccessKeyID, out.SecretAccessKey)
			return nil
		},
	}
	app.addOutputFlag(creds)

	root.AddCommand(mb, rb, ls, put, get, rm, presign, creds)
	return root
}
