package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// TriggerView is a trigger as the triggers API shows it (see internal/triggers).
type TriggerView struct {
	Name     string         `json:"name"`
	Function string         `json:"function"`
	Kind     string         `json:"kind"`
	Schedule map[string]any `json:"schedule,omitempty"`
	Topic    map[string]any `json:"topic,omitempty"`
	Queue    map[string]any `json:"queue,omitempty"`
	HTTP     map[string]any `json:"http,omitempty"`
	MQTT     map[string]any `json:"mqtt,omitempty"`
	KV       map[string]any `json:"kv,omitempty"`
	Objects  map[string]any `json:"objects,omitempty"`
	Updated  time.Time      `json:"updated"`
}

// describe summarises a trigger's settings on one line.
func (t *TriggerView) describe() string {
	var m map[string]any
	switch t.Kind {
	case "schedule":
		m = t.Schedule
	case "topic":
		m = t.Topic
	case "queue":
		m = t.Queue
	case "http":
		m = t.HTTP
	case "mqtt":
		m = t.MQTT
	case "kv":
		m = t.KV
	case "objects":
		m = t.Objects
	}
	var parts []string
	for _, k := range []string{"cron", "timezone", "missed", "topic", "types", "source", "subject_prefix", "queue", "batch", "window", "method", "path", "filter", "bucket", "prefix", "suffix", "events"} {
		if v, ok := m[k]; ok && fmt.Sprint(v) != "" {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if wh, ok := m["webhook"].(map[string]any); ok {
		parts = append(parts, fmt.Sprintf("webhook=%v(%v)", wh["algo"], wh["header"]))
	}
	return strings.Join(parts, " ")
}

func init() { register(newTriggerCmd) }

func triggersPath(fn string) string { return "/api/v1/functions/" + url.PathEscape(fn) + "/triggers" }

func newTriggerCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:   "trigger",
		Short: "Bind event sources to a function: schedules, topics, queues, HTTP routes, webhooks, MQTT, kv and object changes",
		Example: `  nimbus trigger add report --schedule '0 3 * * *' --timezone Europe/Paris
  nimbus trigger add shipping --topic orders --type order.created
  nimbus trigger ls report
  nimbus trigger rm report schedule`,
	}
	var (
		name, schedule, timezone, missed                     string
		topic, source, subjectPrefix                         string
		types                                                []string
		queue                                                string
		batch                                                int
		window                                               time.Duration
		route, secret, header, algo, mqttFilter, kv, objects string
		prefix, suffix                                       string
		events                                               []string
	)
	add := &cobra.Command{
		Use:   "add FUNCTION (--schedule|--topic|--queue|--route|--mqtt|--kv|--objects) …",
		Short: "Create or replace a trigger of a function (named after its kind unless --name is given)",
		Example: `  nimbus trigger add report --schedule '@every 1m'
  nimbus trigger add report --name nightly --schedule '0 3 * * *' --timezone Europe/Paris --missed once
  nimbus trigger add shipping --topic orders --type order.created --source /shop --subject-prefix eu/
  nimbus trigger add worker --queue jobs --batch 10 --window 1s
  nimbus trigger add products --route 'GET /api/products/{id}'
  nimbus trigger add deploy-hook --route 'POST /hooks/github' --webhook-secret "$SECRET"
  nimbus trigger add thermostat --mqtt 'sensors/+/temp'
  nimbus trigger add audit --kv app --prefix user/
  nimbus trigger add thumbs --objects photos --suffix .jpg --events created`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			body := map[string]any{}
			kinds := 0
			set := func(kind string, v map[string]any) {
				kinds++
				body["kind"] = kind
				body[kind] = v
			}
			if schedule != "" {
				set("schedule", map[string]any{"cron": schedule, "timezone": timezone, "missed": missed})
			}
			if topic != "" {
				set("topic", map[string]any{"topic": topic, "types": types, "source": source, "subject_prefix": subjectPrefix})
			}
			if queue != "" {
				q := map[string]any{"queue": queue, "batch": batch}
				if f.Changed("window") {
					q["window"] = window.String()
				}
				set("queue", q)
			}
			if route != "" {
				method, path, ok := strings.Cut(strings.TrimSpace(route), " ")
				if !ok {
					method, path = "", route
				}
				r := map[string]any{"method": method, "path": strings.TrimSpace(path)}
				if secret != "" {
					r["webhook"] = map[string]any{"secret": secret, "header": header, "algo": algo}
				}
				set("http", r)
			} else if secret != "" {
				return fmt.Errorf("--webhook-secret goes with --route")
			}
			if mqttFilter != "" {
				set("mqtt", map[string]any{"filter": mqttFilter})
			}
			if kv != "" {
				set("kv", map[string]any{"bucket": kv, "prefix": prefix, "events": events})
			}
			if objects != "" {
				set("objects", map[string]any{"bucket": objects, "prefix": prefix, "suffix": suffix, "events": events})
			}
			if kinds != 1 {
				return fmt.Errorf("give exactly one of --schedule, --topic, --queue, --route, --mqtt, --kv or --objects")
			}
			tname := name
			if tname == "" {
				tname = body["kind"].(string)
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var out TriggerView
			if err := app.call(ctx, "PUT", triggersPath(args[0])+"/"+url.PathEscape(tname), body, &out); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "trigger %s of %s set: %s %s\n", out.Name, args[0], out.Kind, out.describe())
			return nil
		},
	}
	f := add.Flags()
	f.StringVar(&name, "name", "", "trigger name (default: its kind)")
	f.StringVar(&schedule, "schedule", "", "cron expression: 5 fields, 6 with seconds, @hourly…, or '@every 30s'")
	f.StringVar(&timezone, "timezone", "", "IANA time zone of the schedule (default UTC)")
	f.StringVar(&missed, "missed", "", "missed ticks after downtime: skip (default) or once")
	f.StringVar(&topic, "topic", "", "subscribe to a declared topic")
	f.StringArrayVar(&types, "type", nil, "only CloudEvents of this type (repeatable)")
	f.StringVar(&source, "source", "", "only CloudEvents from this source")
	f.StringVar(&subjectPrefix, "subject-prefix", "", "only CloudEvents whose subject starts with this")
	f.StringVar(&queue, "queue", "", "consume a declared queue in batches")
	f.IntVar(&batch, "batch", 0, "queue messages per invocation (default 10)")
	f.DurationVar(&window, "window", 0, "longest wait to fill a batch (default 1s)")
	f.StringVar(&route, "route", "", "custom HTTP route, e.g. 'GET /api/products/{id}'")
	f.StringVar(&secret, "webhook-secret", "", "verify an HMAC signature of the body with this secret")
	f.StringVar(&header, "webhook-header", "", "header carrying the signature (default X-Hub-Signature-256)")
	f.StringVar(&algo, "webhook-algo", "", "signature algorithm: sha256 (default) or sha1")
	f.StringVar(&mqttFilter, "mqtt", "", "MQTT topic filter, e.g. 'sensors/+/temp'")
	f.StringVar(&kv, "kv", "", "changes of this kv bucket")
	f.StringVar(&objects, "objects", "", "changes of this object bucket")
	f.StringVar(&prefix, "prefix", "", "only keys starting with this (--kv, --objects)")
	f.StringVar(&suffix, "suffix", "", "only keys ending with this (--objects)")
	f.StringSliceVar(&events, "events", nil, "only these events: put,deleted (--kv) or created,deleted (--objects)")

	ls := &cobra.Command{
		Use:     "ls FUNCTION",
		Aliases: []string{"list"},
		Short:   "List a function's triggers",
		Example: `  nimbus trigger ls report
  nimbus trigger ls report -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(app); err != nil {
				return err
			}
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			var out struct {
				Triggers []TriggerView `json:"triggers"`
			}
			if err := app.call(ctx, "GET", triggersPath(args[0]), nil, &out); err != nil {
				return err
			}
			if app.Output == "json" {
				return app.printJSON(out.Triggers)
			}
			tw := tabwriter.NewWriter(app.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tSETTINGS")
			for _, t := range out.Triggers {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Kind, t.describe())
			}
			return tw.Flush()
		},
	}
	app.addOutputFlag(ls)

	rm := &cobra.Command{
		Use:     "rm FUNCTION TRIGGER",
		Short:   "Delete a trigger",
		Example: `  nimbus trigger rm report schedule`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(30 * time.Second)
			defer cancel()
			if err := app.call(ctx, "DELETE", triggersPath(args[0])+"/"+url.PathEscape(args[1]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "trigger %s of %s deleted\n", args[1], args[0])
			return nil
		},
	}
	root.AddCommand(add, ls, rm)
	return root
}
