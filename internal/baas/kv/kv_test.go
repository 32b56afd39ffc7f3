package kv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

type env struct {
	bus *bus.Bus
	svc *Service
	srv *httptest.Server
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	svc := New(Config{Bus: b})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Routes(mux, func(r *http.Request) string { return r.Header.Get("X-Tenant") })
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Stop(sctx); err != nil {
			t.Error(err)
		}
	})
	return &env{bus: b, svc: svc, srv: srv}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, tenant, method, path, body string, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tenant", tenant)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

func expect(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" && !strings.Contains(string(r.body), `"code":"`+code+`"`) {
		t.Fatalf("body %s lacks code %q", r.body, code)
	}
}

func TestKeyEncoding(t *testing.T) {
	for _, k := range []string{"a", "users/42", "héllo wörld", "a.b..c.", "=x=", "*>", " ", "日本/語", strings.Repeat("€", 341)} {
		enc := encodeKey(k)
		if strings.ContainsAny(enc, ".*> ") {
			t.Errorf("encode(%q) = %q has characters JetStream refuses", k, enc)
		}
		dec, err := decodeKey(enc)
		if err != nil || dec != k {
			t.Errorf("decode(encode(%q)) = %q, %v", k, dec, err)
		}
	}
	for _, bad := range []string{"=", "=4", "=GG", "a=zz"} {
		if _, err := decodeKey(bad); err == nil {
			t.Errorf("decodeKey(%q) accepted", bad)
		}
	}
}

func FuzzKeyEncoding(f *testing.F) {
	f.Add("users/42")
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, k string) {
		dec, err := decodeKey(encodeKey(k))
		if err != nil || dec != k {
			t.Fatalf("round trip of %q gave %q, %v", k, dec, err)
		}
	})
}

func TestBucketNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"photos": true, "my.bucket-1": true, "abc": true, strings.Repeat("a", 63): true,
		"ab": false, strings.Repeat("a", 64): false, "Photos": false, "a_b": false, "-ab": false,
		"ab-": false, "a..b": false, "192.168.1.1": false, "a b": false, "": false,
	} {
		if err := checkBucket(name); (err == nil) != ok {
			t.Errorf("checkBucket(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestDocumentsAndCompareAndSet(t *testing.T) {
	e := newEnv(t)
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos", `{"history":5}`), 201, "")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos", ``), 409, "conflict")

	r := e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/ada", `{"done":false}`)
	expect(t, r, 200, "")
	var put struct{ Revision uint64 }
	_ = json.Unmarshal(r.body, &put)
	if put.Revision == 0 {
		t.Fatalf("no revision in %s", r.body)
	}

	r = e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada", "")
	expect(t, r, 200, "")
	if string(r.body) != `{"done":false}` || r.header.Get("ETag") != fmt.Sprintf(`"%d"`, put.Revision) || r.header.Get("X-Nimbus-Revision") != fmt.Sprint(put.Revision) {
		t.Fatalf("got %s etag %q rev %q", r.body, r.header.Get("ETag"), r.header.Get("X-Nimbus-Revision"))
	}

	// Compare-and-set: the current revision wins once, the stale one loses.
	r = e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/ada", `{"done":true}`, "If-Match", fmt.Sprintf(`"%d"`, put.Revision))
	expect(t, r, 200, "")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/ada", `{"done":"stale"}`, "If-Match", fmt.Sprint(put.Revision)), 412, "precondition_failed")
	if r := e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada", ""); string(r.body) != `{"done":true}` {
		t.Fatalf("stale CAS changed the value: %s", r.body)
	}
	// Create-only.
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/ada", `{}`, "If-None-Match", "*"), 412, "precondition_failed")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/bob", `{}`, "If-None-Match", "*"), 200, "")

	// Bad input changes nothing.
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/users/ada", `{"done":`), 400, "bad_request")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/"+strings.Repeat("k", 1025), `{}`), 400, "bad_request")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/todos/big", `"`+strings.Repeat("x", 1<<20)+`"`), 413, "payload_too_large")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/No_Such", `{}`), 400, "invalid_name")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/opts", `{"history":65}`), 400, "bad_request")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/kv/opts", `{"ttl":"soon"}`), 400, "bad_request")
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/nope/x", ""), 404, "not_found")
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/todos/missing", ""), 404, "not_found")
	expect(t, e.do(t, "", "GET", "/api/v1/kv", ""), 401, "unauthorized")
	if r := e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada", ""); string(r.body) != `{"done":true}` {
		t.Fatalf("bad input changed the value: %s", r.body)
	}

	// History and delete (with a stale If-Match first).
	cur := e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada", "").header.Get("X-Nimbus-Revision")
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/kv/todos/users/ada", "", "If-Match", "1"), 412, "precondition_failed")
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/kv/todos/users/ada", "", "If-Match", cur), 200, "")
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada", ""), 404, "not_found")
	r = e.do(t, "acme", "GET", "/api/v1/kv/todos/users/ada?history=1", "")
	expect(t, r, 200, "")
	var h struct{ History []Entry }
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatal(err)
	}
	if len(h.History) != 3 || string(h.History[0].Value) != `{"done":false}` || string(h.History[1].Value) != `{"done":true}` || h.History[2].Op != "delete" {
		t.Fatalf("history %+v", h.History)
	}

	// Buckets list and delete.
	r = e.do(t, "acme", "GET", "/api/v1/kv", "")
	if !strings.Contains(string(r.body), `"name":"todos"`) || !strings.Contains(string(r.body), `"history":5`) {
		t.Fatalf("buckets %s", r.body)
	}
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/kv/todos", ""), 204, "")
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/todos/users/bob", ""), 404, "not_found")
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/kv/todos", ""), 404, "not_found")
}

func TestListPagination(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateBucket(ctx, "acme", "docs", BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 23; i++ {
		k := fmt.Sprintf("user/%02d.é %d", i, i)
		want = append(want, k)
		if _, err := e.svc.Put(ctx, "acme", "docs", k, []byte(fmt.Sprint(i)), Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"other", "use", "user"} {
		if _, err := e.svc.Put(ctx, "acme", "docs", k, []byte(`1`), Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	cursor := ""
	pages := 0
	for {
		r := e.do(t, "acme", "GET", "/api/v1/kv/docs?prefix=user/&limit=10&cursor="+url.QueryEscape(cursor), "")
		expect(t, r, 200, "")
		var p Page
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range p.Items {
			got = append(got, it.Key)
			if it.Revision == 0 || len(it.Value) == 0 {
				t.Fatalf("item %+v lacks revision or value", it)
			}
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if pages != 3 || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%d pages, keys %q", pages, got)
	}
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/docs?limit=0", ""), 400, "bad_request")
	expect(t, e.do(t, "acme", "GET", "/api/v1/kv/docs?cursor=%3D", ""), 400, "bad_request")
}

func TestWatchAndChangeEvents(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.svc.CreateBucket(ctx, "acme", "live.data", BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	// Watching a bucket that does not exist is a 404, not an empty stream.
	missing, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/kv/no.such?watch=1", nil)
	missing.Header.Set("X-Tenant", "acme")
	if r, err := http.DefaultClient.Do(missing); err != nil {
		t.Fatal(err)
	} else if r.Body.Close(); r.StatusCode != http.StatusNotFound {
		t.Fatalf("watch of a missing bucket: %d, want 404", r.StatusCode)
	}
	// The opening comment comes once the watch is in place: the writes
	// made right after it are all seen.
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/kv/live.data?watch=1&prefix=room/", nil)
	req.Header.Set("X-Tenant", "acme")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(r.Body)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), ":") {
		t.Fatalf("no opening comment: %q", sc.Text())
	}
	if _, err := e.svc.Put(ctx, "acme", "live.data", "other", []byte(`0`), Condition{}); err != nil {
		t.Fatal(err)
	}
	rev, err := e.svc.Put(ctx, "acme", "live.data", "room/1", []byte(`{"t":21}`), Condition{})
	if err != nil {
		t.Fatal(err)
	}
	drev, err := e.svc.Delete(ctx, "acme", "live.data", "room/1", Condition{})
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for len(events) < 2 && sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "event: ") || strings.HasPrefix(l, "data: ") {
			if strings.HasPrefix(l, "data: ") {
				events = append(events, l)
			}
		}
	}
	if len(events) != 2 || !strings.Contains(events[0], `"key":"room/1"`) || !strings.Contains(events[0], `{"t":21}`) || !strings.Contains(events[1], `"op":"delete"`) {
		t.Fatalf("events %q", events)
	}

	// The change stream holds one event per write, in order.
	cons, err := e.bus.JS.OrderedConsumer(ctx, ChangeStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{ChangeSubjectFor("acme", "live.data")}})
	if err != nil {
		t.Fatal(err)
	}
	var got []ChangeEvent
	for len(got) < 3 {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		var ev ChangeEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if got[1].Kind != "kv.put" || got[1].Key != "room/1" || got[1].Revision != rev || got[1].Tenant != "acme" || got[1].Bucket != "live.data" ||
		got[2].Kind != "kv.deleted" || got[2].Revision != drev || got[2].Time.IsZero() {
		t.Fatalf("change events %+v", got)
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	expect(t, e.do(t, "alpha", "PUT", "/api/v1/kv/photos", ""), 201, "")
	expect(t, e.do(t, "alpha", "PUT", "/api/v1/kv/photos/k", `"alpha's"`), 200, "")
	expect(t, e.do(t, "beta", "GET", "/api/v1/kv/photos/k", ""), 404, "not_found")
	expect(t, e.do(t, "beta", "PUT", "/api/v1/kv/photos/k", `"x"`), 404, "not_found")
	expect(t, e.do(t, "beta", "DELETE", "/api/v1/kv/photos", ""), 404, "not_found")
	if r := e.do(t, "beta", "GET", "/api/v1/kv", ""); strings.Contains(string(r.body), "photos") {
		t.Fatalf("beta sees alpha's bucket: %s", r.body)
	}
	expect(t, e.do(t, "beta", "PUT", "/api/v1/kv/photos", ""), 201, "")
	expect(t, e.do(t, "beta", "PUT", "/api/v1/kv/photos/k", `"beta's"`), 200, "")
	if r := e.do(t, "alpha", "GET", "/api/v1/kv/photos/k", ""); string(r.body) != `"alpha's"` {
		t.Fatalf("alpha reads %s", r.body)
	}
	expect(t, e.do(t, "Bad_Tenant", "GET", "/api/v1/kv", ""), 400, "invalid_name")
}
