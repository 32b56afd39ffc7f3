package triggers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

func TestScheduleOncePerTickAcrossNodesAndRestart(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	fn := inv.add("tick", registry.Config{Runtime: "process"}, nil)
	a := startNode(t, b, inv)
	a.mustDo(t, "PUT", "/api/v1/functions/tick/triggers/every", `{"schedule":{"cron":"@every 1s"}}`, 201)
	nb := startNode(t, b, inv) // a second node on the same bus
	eventually(t, 20*time.Second, atLeast(fn, 3))

	// Restart one node in the middle of the schedule.
	a.stop(t)
	before := fn.count()
	startNode(t, b, inv)
	eventually(t, 20*time.Second, atLeast(fn, before+3))
	nb.stop(t)

	seen := map[string]int{}
	for _, e := range fn.envelopes(t) {
		if e.Kind != "schedule" || e.Source != "schedule:every" || e.Time.IsZero() {
			t.Fatalf("envelope %+v", e)
		}
		seen[e.ID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("tick %s fired %d times", id, n)
		}
	}
	t.Logf("%d ticks, each fired once, with two nodes and a restart", len(seen))
}

func TestScheduleMissedOnce(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	fn := inv.add("nightly", registry.Config{Runtime: "process"}, nil)
	ts := New(Config{Bus: b, Invoker: inv, Logger: quiet()})
	if err := ts.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The last tick fired three hours ago; the schedule is hourly.
	last := time.Now().Add(-3 * time.Hour).Truncate(time.Hour)
	if _, err := ts.kv.Put(context.Background(), "default._tick.nightly.hourly", []byte(strconv.FormatInt(last.Unix(), 10))); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, b, inv)
	a.mustDo(t, "PUT", "/api/v1/functions/nightly/triggers/hourly", `{"schedule":{"cron":"@every 1h","missed":"once"}}`, 201)
	startNode(t, b, inv)
	eventually(t, 10*time.Second, atLeast(fn, 1))
	// A restart does not fire it again.
	a.stop(t)
	startNode(t, b, inv)
	time.Sleep(300 * time.Millisecond) // give a wrong second catch-up the chance to show
	envs := fn.envelopes(t)
	if len(envs) != 1 {
		t.Fatalf("missed ticks fired %d times, want once", len(envs))
	}
	want := time.Now().Truncate(time.Hour)
	if !envs[0].Time.Equal(want) {
		t.Fatalf("caught-up tick %s, want the latest missed %s", envs[0].Time, want)
	}
}

func TestTriggerValidationStoresNothing(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	inv.add("f", registry.Config{Runtime: "process"}, nil)
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/topics/orders", "", 200)
	cases := []struct {
		name, path, body string
		status           int
		code, mention    string
	}{
		{"invalid cron", "f/triggers/t", `{"schedule":{"cron":"61 * * * *"}}`, 400, "invalid_config", "cron"},
		{"too many fields", "f/triggers/t", `{"schedule":{"cron":"* * * * * * *"}}`, 400, "invalid_config", "cron"},
		{"bad time zone", "f/triggers/t", `{"schedule":{"cron":"@daily","timezone":"Mars/Olympus"}}`, 400, "invalid_config", "timezone"},
		{"bad missed", "f/triggers/t", `{"schedule":{"cron":"@daily","missed":"all"}}`, 400, "invalid_config", "missed"},
		{"unknown function", "ghost/triggers/t", `{"schedule":{"cron":"@daily"}}`, 404, "function_not_found", "ghost"},
		{"unknown topic", "f/triggers/t", `{"topic":{"topic":"nope"}}`, 404, "not_found", "nope"},
		{"unknown queue", "f/triggers/t", `{"queue":{"queue":"nope"}}`, 404, "not_found", "nope"},
		{"bad trigger name", "f/triggers/Bad_Name", `{"schedule":{"cron":"@daily"}}`, 400, "invalid_config", "trigger name"},
		{"two kinds", "f/triggers/t", `{"schedule":{"cron":"@daily"},"topic":{"topic":"orders"}}`, 400, "invalid_config", "exactly one"},
		{"no kind", "f/triggers/t", `{}`, 400, "invalid_config", "exactly one"},
		{"unknown field", "f/triggers/t", `{"cron":"@daily"}`, 400, "bad_request", "cron"},
		{"reserved route", "f/triggers/t", `{"http":{"method":"GET","path":"/api/v1/functions"}}`, 400, "invalid_config", "Nimbus serves"},
		{"bad route pattern", "f/triggers/t", `{"http":{"method":"GET","path":"/a/{x"}}`, 400, "invalid_config", "route"},
		{"webhook without secret", "f/triggers/t", `{"http":{"method":"POST","path":"/hook","webhook":{}}}`, 400, "invalid_config", "secret"},
		{"mqtt wildcard first", "f/triggers/t", `{"mqtt":{"filter":"#"}}`, 400, "invalid_config", "literal"},
		{"mqtt reserved", "f/triggers/t", `{"mqtt":{"filter":"nimbus/#"}}`, 400, "invalid_config", "reserved"},
		{"mqtt bad #", "f/triggers/t", `{"mqtt":{"filter":"a/#/b"}}`, 400, "invalid_config", "last"},
		{"queue batch", "f/triggers/t", `{"queue":{"queue":"q","batch":5000}}`, 400, "invalid_config", "batch"},
		{"objects events", "f/triggers/t", `{"objects":{"bucket":"b","events":["renamed"]}}`, 400, "invalid_config", "renamed"},
	}
	for _, tc := range cases {
		code, body := n.do(t, "PUT", "/api/v1/functions/"+tc.path, tc.body, nil)
		c, msg, _ := apierr.Decode([]byte(body))
		if code != tc.status || c != tc.code || !strings.Contains(msg, tc.mention) {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
	}
	ts, err := n.trig.List(context.Background(), "default", "")
	if err != nil || len(ts) != 0 {
		t.Fatalf("stored after refusals: %v %v", ts, err)
	}
	// A valid one with a time zone, then listing.
	n.mustDo(t, "PUT", "/api/v1/functions/f/triggers/paris", `{"schedule":{"cron":"0 9 * * 1-5","timezone":"Europe/Paris"}}`, 201)
	n.mustDo(t, "PUT", "/api/v1/functions/f/triggers/paris", `{"schedule":{"cron":"CRON_TZ=Asia/Tokyo 30 8 * * *"}}`, 200)
	out := n.mustDo(t, "GET", "/api/v1/functions/f/triggers", "", 200)
	if !strings.Contains(out, "Asia/Tokyo") {
		t.Fatalf("list: %s", out)
	}
	n.mustDo(t, "DELETE", "/api/v1/functions/f/triggers/paris", "", 200)
	n.mustDo(t, "DELETE", "/api/v1/functions/f/triggers/paris", "", 404)
}

func TestCloudEventsBothModesFanOut(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	a := inv.add("shipping", registry.Config{Runtime: "process"}, nil)
	c := inv.add("billing", registry.Config{Runtime: "process"}, nil)
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/topics/orders", "", 200)
	n.mustDo(t, "PUT", "/api/v1/functions/shipping/triggers/on-order", `{"topic":{"topic":"orders","types":["order.created"],"subject_prefix":"eu/"}}`, 201)
	n.mustDo(t, "PUT", "/api/v1/functions/billing/triggers/on-order", `{"topic":{"topic":"orders","source":"/shop"}}`, 201)

	// Binary mode.
	code, out := n.do(t, "POST", "/events/orders", `{"order":1}`, map[string]string{
		"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/shop", "ce-type": "order.created",
		"ce-subject": "eu/fr/1", "ce-time": "2026-01-02T03:04:05Z", "ce-tenantref": "acme", "Content-Type": "application/json",
	})
	if code != 202 {
		t.Fatalf("binary: %d %s", code, out)
	}
	// Structured mode.
	code, out = n.do(t, "POST", "/events/orders", `{"specversion":"1.0","id":"e-2","source":"/shop","type":"order.created","subject":"eu/de/2","datacontenttype":"text/plain","data":"hello","traceparent":"00-abc"}`,
		map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"})
	if code != 202 {
		t.Fatalf("structured: %d %s", code, out)
	}
	// Filtered out for shipping (type), delivered to billing (source matches).
	n.do(t, "POST", "/events/orders", `{}`, map[string]string{"ce-specversion": "1.0", "ce-id": "e-3", "ce-source": "/shop", "ce-type": "order.cancelled", "ce-subject": "eu/x"})
	// Filtered out for billing (source), and for shipping (subject prefix).
	n.do(t, "POST", "/events/orders", `{}`, map[string]string{"ce-specversion": "1.0", "ce-id": "e-4", "ce-source": "/other", "ce-type": "order.created", "ce-subject": "us/1"})

	eventually(t, 20*time.Second, func() error {
		if a.count() != 2 || c.count() != 3 {
			return fmt.Errorf("shipping %d (want 2), billing %d (want 3)", a.count(), c.count())
		}
		return nil
	})
	byID := map[string]map[string]any{}
	for _, e := range a.envelopes(t) {
		var m map[string]any
		raw, _ := json.Marshal(e)
		_ = json.Unmarshal(raw, &m)
		byID[e.ID] = m
		if e.Kind != "topic" || e.Attempt != 1 {
			t.Errorf("envelope %+v", e)
		}
	}
	e1, e2 := byID["e-1"], byID["e-2"]
	if e1 == nil || e2 == nil {
		t.Fatalf("shipping got %v", byID)
	}
	if e1["source"] != "/shop" || e1["type"] != "order.created" || e1["subject"] != "eu/fr/1" || e1["time"] != "2026-01-02T03:04:05Z" ||
		fmt.Sprint(e1["data"]) != "map[order:1]" || e1["datacontenttype"] != "application/json" || fmt.Sprint(e1["extensions"]) != "map[tenantref:acme]" {
		t.Errorf("binary event arrived as %v", e1)
	}
	if e2["data"] != "hello" || e2["subject"] != "eu/de/2" || e2["datacontenttype"] != "text/plain" || fmt.Sprint(e2["extensions"]) != "map[traceparent:00-abc]" {
		t.Errorf("structured event arrived as %v", e2)
	}

	// Malformed events: 400 naming what is wrong; undeclared topic: 404.
	bad := []struct {
		name, body string
		hdr        map[string]string
		status     int
		mention    string
	}{
		{"missing id", "{}", map[string]string{"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}, 400, "id"},
		{"missing source", "{}", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}, 400, "source"},
		{"missing type", "{}", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s"}, 400, "type"},
		{"missing specversion", "{}", map[string]string{"ce-id": "1", "ce-source": "/s", "ce-type": "t"}, 400, "specversion"},
		{"wrong specversion", "{}", map[string]string{"ce-specversion": "0.3", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}, 400, "0.3"},
		{"bad time", "{}", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-time": "yesterday"}, 400, "time"},
		{"structured bad JSON", `{"specversion":"1.0",`, map[string]string{"Content-Type": "application/cloudevents+json"}, 400, "JSON"},
		{"structured missing id", `{"specversion":"1.0","source":"/s","type":"t"}`, map[string]string{"Content-Type": "application/cloudevents+json"}, 400, "id"},
		{"structured id not a string", `{"specversion":"1.0","id":5,"source":"/s","type":"t"}`, map[string]string{"Content-Type": "application/cloudevents+json"}, 400, "id"},
	}
	for _, tc := range bad {
		code, out := n.do(t, "POST", "/events/orders", tc.body, tc.hdr)
		_, msg, _ := apierr.Decode([]byte(out))
		if code != tc.status || !strings.Contains(msg, tc.mention) {
			t.Errorf("%s: %d %s", tc.name, code, out)
		}
	}
	code, out = n.do(t, "POST", "/events/nope", "{}", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"})
	if code != 404 {
		t.Errorf("undeclared topic: %d %s", code, out)
	}
	// Publish from Go (the CLI and host API path) reaches subscribers too.
	if err := n.trig.Publish(context.Background(), "default", "orders", &CloudEvent{SpecVersion: "1.0", ID: "e-5", Source: "/shop", Type: "order.created", Subject: "eu/5", Data: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, atLeast(a, 3))
}

func TestQueueBatchRetriesOnlyPoisonedItem(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	fn := inv.add("worker", registry.Config{Runtime: "process", Async: registry.Async{Retries: intp(2)}}, func(req *runtime.Request, body []byte, w http.ResponseWriter) error {
		var env struct {
			Data []QueueItem `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return err
		}
		var resp BatchResponse
		for _, it := range env.Data {
			if strings.Contains(string(it.Data), "poison") {
				resp.BatchItemFailures = append(resp.BatchItemFailures, struct {
					ItemIdentifier string `json:"itemIdentifier"`
				}{it.ID})
			}
		}
		return json.NewEncoder(w).Encode(resp)
	})
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/queues/jobs", "", 200)
	n.mustDo(t, "PUT", "/api/v1/functions/worker/triggers/jobs", `{"queue":{"queue":"jobs","batch":10,"window":"200ms"}}`, 201)
	// A second consumer of the same queue is refused.
	inv.add("other", registry.Config{Runtime: "process"}, nil)
	n.mustDo(t, "PUT", "/api/v1/functions/other/triggers/jobs", `{"queue":{"queue":"jobs"}}`, 409)
	out := n.mustDo(t, "POST", "/api/v1/queues/jobs/messages", `[{"n":1},{"n":2},{"poison":true},{"n":4},{"n":5}]`, 202)
	var sent struct{ IDs []string }
	_ = json.Unmarshal([]byte(out), &sent)
	if len(sent.IDs) != 5 {
		t.Fatalf("send: %s", out)
	}
	poisonID := sent.IDs[2]
	var dls []map[string]any
	eventually(t, 20*time.Second, func() error {
		code, out := n.do(t, "GET", "/api/v1/functions/worker/dlq", "", nil)
		var res struct {
			DeadLetters []map[string]any `json:"dead_letters"`
		}
		_ = json.Unmarshal([]byte(out), &res)
		if code != 200 || len(res.DeadLetters) != 1 {
			return fmt.Errorf("dlq: %d %s", code, out)
		}
		dls = res.DeadLetters
		return nil
	})
	if dls[0]["id"] != poisonID || dls[0]["attempts"] != float64(3) || !strings.Contains(fmt.Sprint(dls[0]["error"]), "batchItemFailures") {
		t.Fatalf("dead letter %v", dls[0])
	}
	deliveries := map[string]int{}
	for _, e := range fn.envelopes(t) {
		if e.Kind != "queue" || e.Source != "queue:jobs" {
			t.Fatalf("envelope %+v", e)
		}
		var items []QueueItem
		_ = json.Unmarshal(e.Data, &items)
		for _, it := range items {
			deliveries[it.ID]++
		}
	}
	for i, id := range sent.IDs {
		want := 1
		if id == poisonID {
			want = 3
		}
		if deliveries[id] != want {
			t.Errorf("item %d delivered %d times, want %d", i, deliveries[id], want)
		}
	}
	// Bad input.
	n.mustDo(t, "POST", "/api/v1/queues/jobs/messages", `{"n":`, 400)
	n.mustDo(t, "POST", "/api/v1/queues/nope/messages", `{}`, 404)
}

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestRoutesAndWebhookSignature(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	products := inv.add("products", registry.Config{Runtime: "process"}, func(req *runtime.Request, body []byte, w http.ResponseWriter) error {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("product " + req.Header.Get("X-Nimbus-Param-Id") + " at " + req.Path))
		return nil
	})
	hook := inv.add("hook", registry.Config{Runtime: "process"}, func(req *runtime.Request, body []byte, w http.ResponseWriter) error {
		_, _ = w.Write(append([]byte("got "), body...))
		return nil
	})
	inv.add("broken", registry.Config{Runtime: "process"}, func(req *runtime.Request, body []byte, w http.ResponseWriter) error {
		return runtime.Errorf(runtime.Crashed, "segfault")
	})
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/functions/products/triggers/get", `{"http":{"method":"GET","path":"/api/products/{id}"}}`, 201)
	out := n.mustDo(t, "PUT", "/api/v1/functions/hook/triggers/github", `{"http":{"method":"POST","path":"/hooks/github","webhook":{"secret":"s3cret"}}}`, 201)
	if strings.Contains(out, "s3cret") || !strings.Contains(out, `"secret_set":true`) {
		t.Fatalf("the secret leaks or is not marked: %s", out)
	}
	n.mustDo(t, "PUT", "/api/v1/functions/broken/triggers/r", `{"http":{"path":"/broken"}}`, 201)
	// Same pattern again for another function: conflict.
	n.mustDo(t, "PUT", "/api/v1/functions/hook/triggers/dup", `{"http":{"method":"GET","path":"/api/products/{id}"}}`, 409)

	eventually(t, 10*time.Second, func() error {
		code, out := n.do(t, "GET", "/api/products/42", "", nil)
		if code != 200 || out != "product 42 at /api/products/42" {
			return fmt.Errorf("%d %s", code, out)
		}
		return nil
	})
	body := `{"action":"opened"}`
	for _, tc := range []struct {
		name string
		hdr  map[string]string
	}{
		{"missing", nil},
		{"wrong", map[string]string{"X-Hub-Signature-256": sign("other", body)}},
		{"garbage", map[string]string{"X-Hub-Signature-256": "sha256=zz"}},
		{"other body", map[string]string{"X-Hub-Signature-256": sign("s3cret", body+" ")}},
	} {
		code, out := n.do(t, "POST", "/hooks/github", body, tc.hdr)
		if c, _, _ := apierr.Decode([]byte(out)); code != 401 || c != "unauthorized" {
			t.Errorf("%s signature: %d %s", tc.name, code, out)
		}
	}
	if hook.count() != 0 {
		t.Fatalf("the webhook function ran %d times on bad signatures", hook.count())
	}
	code, out := n.do(t, "POST", "/hooks/github", body, map[string]string{"X-Hub-Signature-256": sign("s3cret", body)})
	if code != 200 || out != "got "+body || hook.count() != 1 {
		t.Fatalf("good signature: %d %s (calls %d)", code, out, hook.count())
	}
	code, out = n.do(t, "GET", "/broken", "", nil)
	if c, _, _ := apierr.Decode([]byte(out)); code != 502 || c != "function_crashed" {
		t.Fatalf("crashing route: %d %s", code, out)
	}
	code, out = n.do(t, "GET", "/nothing/here", "", nil)
	if code != 404 {
		t.Fatalf("unrouted: %d %s", code, out)
	}
	// Deleting the trigger unmounts the route.
	n.mustDo(t, "DELETE", "/api/v1/functions/products/triggers/get", "", 200)
	eventually(t, 10*time.Second, func() error {
		if code, _ := n.do(t, "GET", "/api/products/42", "", nil); code != 404 {
			return fmt.Errorf("still routed: %d", code)
		}
		return nil
	})
	if products.count() != 1 {
		t.Fatalf("products calls %d", products.count())
	}
}

func TestKVAndObjectChanges(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	users := inv.add("users", registry.Config{Runtime: "process"}, nil)
	thumbs := inv.add("thumbs", registry.Config{Runtime: "process"}, nil)
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/functions/users/triggers/kv", `{"kv":{"bucket":"app","prefix":"user/"}}`, 201)
	n.mustDo(t, "PUT", "/api/v1/functions/thumbs/triggers/img", `{"objects":{"bucket":"photos","suffix":".jpg","events":["created"]}}`, 201)
	ctx := context.Background()
	pub := func(kind, bucket, key string) {
		c := Change{Kind: kind, Bucket: bucket, Key: key, Time: time.Now().UTC()}
		data, _ := json.Marshal(c)
		area := "kv"
		if strings.HasPrefix(kind, "object.") {
			area = "objects"
		}
		if _, err := b.JS.Publish(ctx, bus.Subject(bus.SubjectChanges, "default", area, bucket), data); err != nil {
			t.Fatal(err)
		}
	}
	// Consumers are created when the triggers start; wait until they exist.
	eventually(t, 10*time.Second, func() error {
		for _, name := range []string{"trig_default_users_kv", "trig_default_thumbs_img"} {
			if _, err := b.JS.Consumer(ctx, bus.StreamChanges, name); err != nil {
				return err
			}
		}
		return nil
	})
	pub("kv.put", "app", "user/1")
	pub("kv.put", "app", "order/1")
	pub("kv.deleted", "app", "user/2")
	pub("object.created", "photos", "a.jpg")
	pub("object.created", "photos", "a.png")
	pub("object.deleted", "photos", "b.jpg")
	eventually(t, 10*time.Second, func() error {
		if users.count() != 2 || thumbs.count() != 1 {
			return fmt.Errorf("users %d (want 2), thumbs %d (want 1)", users.count(), thumbs.count())
		}
		return nil
	})
	e := thumbs.envelopes(t)[0]
	if e.Kind != "objects" || e.Subject != "a.jpg" || e.Type != "object.created" {
		t.Fatalf("envelope %+v", e)
	}
}

func TestRouteHonoursFunctionAuth(t *testing.T) {
	b := openBus(t, bus.Config{})
	inv := newInvoker()
	private := inv.add("private", registry.Config{Runtime: "process", Auth: "key"}, nil)
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/functions/private/triggers/r", `{"http":{"method":"GET","path":"/private"}}`, 201)
	code, out := n.do(t, "GET", "/private", "", nil)
	if c, _, _ := apierr.Decode([]byte(out)); code != 401 || c != "unauthorized" || private.count() != 0 {
		t.Fatalf("auth: key function over a custom route: %d %s (calls %d)", code, out, private.count())
	}
	// With an Authorize hook (the server's key check), the request goes through.
	n.trig.SetAuthorize(func(r *http.Request, v *registry.Version) error {
		if r.Header.Get("Authorization") != "Bearer good" {
			return apierr.New(apierr.Unauthorized, "bad key")
		}
		return nil
	})
	if code, _ := n.do(t, "GET", "/private", "", map[string]string{"Authorization": "Bearer good"}); code != 200 || private.count() != 1 {
		t.Fatalf("authorized: %d (calls %d)", code, private.count())
	}
}
