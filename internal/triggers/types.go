package triggers

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// Trigger kinds.
const (
	KindSchedule = "schedule"
	KindTopic    = "topic"
	KindQueue    = "queue"
	KindHTTP     = "http"
	KindMQTT     = "mqtt"
	KindKV       = "kv"
	KindObjects  = "objects"
)

// Trigger binds an event source to a function.
type Trigger struct {
	Name     string      `json:"name"`
	Function string      `json:"function"`
	Tenant   string      `json:"tenant,omitempty"`
	Kind     string      `json:"kind"`
	Schedule *Schedule   `json:"schedule,omitempty"`
	Topic    *TopicSub   `json:"topic,omitempty"`
	Queue    *QueueSub   `json:"queue,omitempty"`
	HTTP     *Route      `json:"http,omitempty"`
	MQTT     *MQTTSub    `json:"mqtt,omitempty"`
	KV       *KVSub      `json:"kv,omitempty"`
	Objects  *ObjectsSub `json:"objects,omitempty"`
	Created  time.Time   `json:"created"`
	Updated  time.Time   `json:"updated"`
}

// Schedule fires on a cron schedule.
type Schedule struct {
	Cron     string `json:"cron"`
	Timezone string `json:"timezone,omitempty"`
	// Missed is "skip" (default) or "once".
	Missed string `json:"missed,omitempty"`
}

// TopicSub subscribes to a declared topic, with optional filters.
type TopicSub struct {
	Topic         string   `json:"topic"`
	Types         []string `json:"types,omitempty"`
	Source        string   `json:"source,omitempty"`
	SubjectPrefix string   `json:"subject_prefix,omitempty"`
}

// QueueSub consumes a declared queue in batches.
type QueueSub struct {
	Queue  string            `json:"queue"`
	Batch  int               `json:"batch,omitempty"`
	Window registry.Duration `json:"window,omitempty"`
}

// Route is a custom HTTP route, optionally a signed webhook.
type Route struct {
	Method  string   `json:"method,omitempty"`
	Path    string   `json:"path"`
	Webhook *Webhook `json:"webhook,omitempty"`
}

// Webhook verifies an HMAC signature of the raw body.
type Webhook struct {
	Header string `json:"header,omitempty"`
	Secret string `json:"secret,omitempty"`
	// Algo is "sha256" (default) or "sha1".
	Algo string `json:"algo,omitempty"`
	// SecretSet is true in answers (the secret itself is never returned).
	SecretSet bool `json:"secret_set,omitempty"`
}

// MQTTSub subscribes to an MQTT topic filter.
type MQTTSub struct {
	Filter string `json:"filter"`
}

// KVSub delivers changes of a kv bucket.
type KVSub struct {
	Bucket string   `json:"bucket"`
	Prefix string   `json:"prefix,omitempty"`
	Events []string `json:"events,omitempty"`
}

// ObjectsSub delivers changes of an object bucket.
type ObjectsSub struct {
	Bucket string   `json:"bucket"`
	Prefix string   `json:"prefix,omitempty"`
	Suffix string   `json:"suffix,omitempty"`
	Events []string `json:"events,omitempty"`
}

// Topic is a declared topic.
type Topic struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Queue is a declared queue.
type Queue struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Defaults and bounds.
const (
	DefaultBatch  = 10
	MaxBatch      = 1000
	DefaultWindow = time.Second
	MinWindow     = 10 * time.Millisecond
	MaxWindow     = 5 * time.Minute
)

// public returns a copy of t safe to show: the webhook secret is removed.
func (t *Trigger) public() *Trigger {
	c := *t
	if t.HTTP != nil && t.HTTP.Webhook != nil {
		r := *t.HTTP
		wh := *t.HTTP.Webhook
		wh.SecretSet, wh.Secret = wh.Secret != "", ""
		r.Webhook = &wh
		c.HTTP = &r
	}
	return &c
}

// key is the trigger's key in the bucket.
func (t *Trigger) key() string { return t.Tenant + "." + t.Function + "." + t.Name }

// badf is a validation error: 400 with a message saying what to fix.
type badf struct{ msg string }

func (e *badf) Error() string { return e.msg }

func bad(format string, args ...any) error { return &badf{msg: fmt.Sprintf(format, args...)} }

// normalize fills the kind and defaults and checks everything that does not
// need the store (function, topic and queue existence are checked by the
// service).
func (t *Trigger) normalize() error {
	if err := registry.CheckName("trigger", t.Name); err != nil {
		return bad("%v", err)
	}
	if err := registry.CheckName("function", t.Function); err != nil {
		return bad("%v", err)
	}
	set := map[string]bool{
		KindSchedule: t.Schedule != nil, KindTopic: t.Topic != nil, KindQueue: t.Queue != nil,
		KindHTTP: t.HTTP != nil, KindMQTT: t.MQTT != nil, KindKV: t.KV != nil, KindObjects: t.Objects != nil,
	}
	var kinds []string
	for k, ok := range set {
		if ok {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		return bad("a trigger needs exactly one of schedule, topic, queue, http, mqtt, kv or objects (got %d)", len(kinds))
	}
	if t.Kind == "" {
		t.Kind = kinds[0]
	}
	if t.Kind != kinds[0] {
		return bad("kind %q does not match the %s settings given", t.Kind, kinds[0])
	}
	switch t.Kind {
	case KindSchedule:
		if _, err := parseSchedule(t.Schedule); err != nil {
			return err
		}
		switch t.Schedule.Missed {
		case "":
			t.Schedule.Missed = "skip"
		case "skip", "once":
		default:
			return bad("schedule.missed must be skip or once, not %q", t.Schedule.Missed)
		}
	case KindTopic:
		if err := registry.CheckName("topic", t.Topic.Topic); err != nil {
			return bad("%v", err)
		}
	case KindQueue:
		q := t.Queue
		if err := registry.CheckName("queue", q.Queue); err != nil {
			return bad("%v", err)
		}
		if q.Batch == 0 {
			q.Batch = DefaultBatch
		}
		if q.Batch < 1 || q.Batch > MaxBatch {
			return bad("queue.batch must be between 1 and %d", MaxBatch)
		}
		if q.Window == 0 {
			q.Window = registry.Duration(DefaultWindow)
		}
		if w := q.Window.D(); w < MinWindow || w > MaxWindow {
			return bad("queue.window must be between %s and %s", MinWindow, MaxWindow)
		}
	case KindHTTP:
		if err := checkRoute(t.HTTP); err != nil {
			return err
		}
	case KindMQTT:
		if _, err := mqttSubject(t.MQTT.Filter); err != nil {
			return err
		}
	case KindKV:
		if err := registry.CheckName("kv bucket", t.KV.Bucket); err != nil {
			return bad("%v", err)
		}
		for i, e := range t.KV.Events {
			if !strings.HasPrefix(e, "kv.") {
				t.KV.Events[i] = "kv." + e
			}
		}
		if err := checkEvents(t.KV.Events, "kv.put", "kv.deleted"); err != nil {
			return err
		}
	case KindObjects:
		if err := registry.CheckName("object bucket", t.Objects.Bucket); err != nil {
			return bad("%v", err)
		}
		for i, e := range t.Objects.Events {
			if !strings.HasPrefix(e, "object.") {
				t.Objects.Events[i] = "object." + e
			}
		}
		if err := checkEvents(t.Objects.Events, "object.created", "object.deleted"); err != nil {
			return err
		}
	}
	return nil
}

func checkEvents(events []string, allowed ...string) error {
	for _, e := range events {
		ok := false
		for _, a := range allowed {
			ok = ok || e == a
		}
		if !ok {
			return bad("event %q is unknown; use %s", e, strings.Join(allowed, ", "))
		}
	}
	return nil
}

var routeMethods = map[string]bool{
	"": true, http.MethodGet: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true,
	http.MethodDelete: true, http.MethodHead: true, http.MethodOptions: true,
}

// reservedPrefixes are paths Nimbus serves itself.
var reservedPrefixes = []string{"/api/v1", "/fn/", "/async/", "/events/", "/metrics", "/healthz", "/readyz", "/s3/", "/2015-03-31/", "/function/", "/system/"}

func checkRoute(r *Route) error {
	r.Method = strings.ToUpper(r.Method)
	if !routeMethods[r.Method] {
		return bad("http.method %q is not an HTTP method Nimbus routes", r.Method)
	}
	if !strings.HasPrefix(r.Path, "/") {
		return bad("http.path %q must begin with /", r.Path)
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(r.Path, p) || r.Path+"/" == p {
			return bad("http.path %q is under %s, which Nimbus serves itself; choose another path", r.Path, p)
		}
	}
	if err := tryPattern(r.pattern()); err != nil {
		return bad("http route %q: %v", r.pattern(), err)
	}
	if wh := r.Webhook; wh != nil {
		if wh.Algo == "" {
			wh.Algo = "sha256"
		}
		switch wh.Algo {
		case "sha256", "sha1":
		default:
			return bad("webhook.algo must be sha256 or sha1, not %q", wh.Algo)
		}
		if wh.Secret == "" {
			return bad("webhook.secret is required: the shared secret the sender signs the body with")
		}
		if wh.Header == "" {
			wh.Header = "X-Hub-Signature-256"
			if wh.Algo == "sha1" {
				wh.Header = "X-Hub-Signature"
			}
		}
	}
	return nil
}

// pattern is the route's ServeMux pattern.
func (r *Route) pattern() string {
	if r.Method == "" {
		return r.Path
	}
	return r.Method + " " + r.Path
}

// tryPattern reports whether mux accepts pattern.
func tryPattern(pattern string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	http.NewServeMux().Handle(pattern, http.NotFoundHandler())
	return nil
}

// mqttSubject maps an MQTT topic filter onto a NATS subject.
func mqttSubject(filter string) (string, error) {
	if filter == "" {
		return "", bad("mqtt.filter is required, e.g. sensors/+/temp")
	}
	levels := strings.Split(filter, "/")
	first := levels[0]
	if first == "" || first == "+" || first == "#" || strings.HasPrefix(first, "$") || first == "nimbus" || first == "_INBOX" {
		return "", bad("mqtt.filter %q must begin with a literal level that is not reserved (nimbus, $…, _INBOX), e.g. sensors/+/temp", filter)
	}
	out := make([]string, len(levels))
	for i, l := range levels {
		switch {
		case l == "+":
			out[i] = "*"
		case l == "#":
			if i != len(levels)-1 {
				return "", bad("mqtt.filter %q: # must be the last level", filter)
			}
			out[i] = ">"
		case l == "" || strings.ContainsAny(l, "+#.*> \t"):
			return "", bad("mqtt.filter %q: level %q is not allowed (empty, or has + # . * > or spaces)", filter, l)
		default:
			out[i] = l
		}
	}
	return strings.Join(out, "."), nil
}
