package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/server"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// call sends one request to e with key as its API key ("" sends none; the
// loopback admin then acts) and returns the status and body.
func call(t *testing.T, e *testenv.Env, key, method, path string, body []byte, header ...string) (int, []byte) {
	t.Helper()
	if key != "" {
		header = append(header, "Authorization", "Bearer "+key)
	}
	resp, b := e.Do(method, path, body, header...)
	return resp.StatusCode, b
}

// mustCall is call that fails the test unless the status is below 300.
func mustCall(t *testing.T, e *testenv.Env, key, method, path string, body []byte, header ...string) []byte {
	t.Helper()
	status, b := call(t, e, key, method, path, body, header...)
	if status >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	return b
}

// createTenant creates tenant name (with quotas, a JSON object or "").
func createTenant(t *testing.T, e *testenv.Env, name, quotas string) {
	t.Helper()
	if quotas == "" {
		quotas = "{}"
	}
	mustCall(t, e, "", "POST", "/api/v1/tenants", []byte(fmt.Sprintf(`{"name":%q,"quotas":%s}`, name, quotas)))
}

// createKey issues a key of tenant with scopes; extra is more JSON fields.
func createKey(t *testing.T, e *testenv.Env, tenantName, extra string, scopes ...string) (key, id string) {
	t.Helper()
	sc, _ := json.Marshal(scopes)
	body := fmt.Sprintf(`{"tenant":%q,"scopes":%s%s}`, tenantName, sc, extra)
	var k struct{ ID, Key string }
	if err := json.Unmarshal(mustCall(t, e, "", "POST", "/api/v1/keys", []byte(body)), &k); err != nil || !strings.HasPrefix(k.Key, "nmb_") {
		t.Fatalf("key for %s: %v %+v", tenantName, err, k)
	}
	return k.Key, k.ID
}

// deployAs deploys code as function name with key; it returns the status and body.
func deployAs(t *testing.T, e *testenv.Env, key, name string, code []byte, cfg registry.Config) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("name", name)
	cb, _ := json.Marshal(cfg)
	_ = mw.WriteField("config", string(cb))
	fw, _ := mw.CreateFormFile("code", "code")
	_, _ = fw.Write(code)
	_ = mw.Close()
	return call(t, e, key, "POST", "/api/v1/functions", buf.Bytes(), "Content-Type", mw.FormDataContentType())
}

// The data tenant B stores; none of it may ever reach tenant A.
const (
	bKVValue     = "beta-kv-value-7f3a"
	bObjectBody  = "beta-object-body-91c2"
	bSecretValue = "beta-secret-value-c0ffee"
	bLogLine     = "beta-log-line-5d1e"
)

// TestTenantIsolationMatrix proves that one tenant's key never reaches
// another tenant's functions, data, files, logs, usage, secrets, triggers,
// topics, async invocations or dead letters, over every API family: each
// attempt is refused with 404 (never 403, so names do not leak) and no answer
// carries the other tenant's data. It also checks 401 for bad keys and 403
// for a key without the scope.
func TestTenantIsolationMatrix(t *testing.T) {
	e := testenv.Start(t, func(c *server.Config) { c.S3Listen = "127.0.0.1:0" })
	code := misbehave(t)
	createTenant(t, e, "alpha", "")
	createTenant(t, e, "beta", "")
	keyA, _ := createKey(t, e, "alpha", "", "deploy", "invoke", "read")
	keyB, _ := createKey(t, e, "beta", "", "deploy", "invoke", "read")
	readA, _ := createKey(t, e, "alpha", "", "read")
	invokeA, _ := createKey(t, e, "alpha", "", "invoke")
	revokedA, revokedID := createKey(t, e, "alpha", "", "deploy", "invoke", "read")
	expiredA, _ := createKey(t, e, "alpha", `,"expires_in":0.2`, "deploy", "invoke", "read")
	mustCall(t, e, "", "DELETE", "/api/v1/keys/"+revokedID, nil)

	// Tenant B's world.
	if status, b := deployAs(t, e, keyB, "secretfn", code, registry.Config{Auth: "key"}); status != 201 {
		t.Fatalf("B deploys: %d %s", status, b)
	}
	mustCall(t, e, keyB, "PUT", "/api/v1/functions/secretfn/aliases/live", []byte(`{"version":1}`))
	mustCall(t, e, keyB, "PUT", "/api/v1/kv/bdata", []byte(`{}`))
	mustCall(t, e, keyB, "PUT", "/api/v1/kv/bdata/k1", []byte(`"`+bKVValue+`"`))
	mustCall(t, e, keyB, "PUT", "/api/v1/objects/bfiles", nil)
	mustCall(t, e, keyB, "PUT", "/api/v1/objects/bfiles/doc.txt", []byte(bObjectBody))
	mustCall(t, e, keyB, "PUT", "/api/v1/secrets/bsecret", []byte(`{"value":"`+bSecretValue+`"}`))
	mustCall(t, e, keyB, "PUT", "/api/v1/topics/btopic", nil)
	mustCall(t, e, keyB, "PUT", "/api/v1/functions/secretfn/triggers/btrig", []byte(`{"kind":"topic","topic":{"topic":"btopic"}}`))
	mustCall(t, e, keyB, "GET", "/fn/secretfn/log?msg="+bLogLine, nil)
	var acc struct{ ID string }
	if err := json.Unmarshal(mustCall(t, e, keyB, "POST", "/async/secretfn/sleep?ms=1", []byte(`{}`)), &acc); err != nil || acc.ID == "" {
		t.Fatalf("B's async invocation: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, b := call(t, e, keyB, "GET", "/api/v1/invocations/"+acc.ID, nil)
		if !strings.Contains(string(b), "succeeded") {
			return fmt.Errorf("B's async status: %s", b)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		_, b := call(t, e, keyB, "GET", "/api/v1/functions/secretfn/logs", nil)
		if !strings.Contains(string(b), bLogLine) {
			return fmt.Errorf("B's logs lack its line: %s", b)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		_, b := call(t, e, keyB, "GET", "/api/v1/usage?by=function", nil)
		if !strings.Contains(string(b), "secretfn") {
			return fmt.Errorf("B's usage lacks secretfn: %s", b)
		}
		return nil
	})
	// B sees its own things, so the refusals below are about A, not absence.
	for _, p := range []string{"/api/v1/functions/secretfn", "/api/v1/kv/bdata/k1", "/api/v1/objects/bfiles/doc.txt",
		"/api/v1/functions/secretfn/triggers/btrig", "/api/v1/functions/secretfn/dlq"} {
		mustCall(t, e, keyB, "GET", p, nil)
	}
	// A has a function of its own, so that its lists are not trivially empty.
	if status, b := deployAs(t, e, keyA, "ownfn", code, registry.Config{}); status != 201 {
		t.Fatalf("A deploys: %d %s", status, b)
	}

	// Every way A's key may name B's things: 404, and none of B's data.
	refused := []struct{ method, path, body string }{
		{"GET", "/api/v1/functions/secretfn", ""},
		{"DELETE", "/api/v1/functions/secretfn", ""},
		{"GET", "/api/v1/functions/secretfn/versions", ""},
		{"GET", "/api/v1/functions/secretfn/versions/1", ""},
		{"GET", "/api/v1/functions/secretfn/aliases", ""},
		{"GET", "/api/v1/functions/secretfn/aliases/live", ""},
		{"PUT", "/api/v1/functions/secretfn/aliases/live", `{"version":1}`},
		{"DELETE", "/api/v1/functions/secretfn/aliases/live", ""},
		{"GET", "/fn/secretfn", ""},
		{"GET", "/fn/secretfn@live/env?k=bsecret", ""},
		{"GET", "/t/beta/fn/secretfn", ""},
		{"GET", "/t/beta/fn/secretfn/log?msg=from-alpha", ""},
		{"POST", "/async/secretfn", "{}"},
		{"GET", "/api/v1/invocations/" + acc.ID, ""},
		{"GET", "/api/v1/functions/secretfn/logs", ""},
		{"GET", "/api/v1/functions/secretfn/logs?grep=" + bLogLine, ""},
		{"GET", "/api/v1/usage?tenant=beta", ""},
		{"GET", "/api/v1/functions?tenant=beta", ""},
		{"GET", "/api/v1/functions", "X-Nimbus-Tenant: beta"},
		{"GET", "/api/v1/tenants/beta", ""},
		{"DELETE", "/api/v1/secrets/bsecret", ""},
		{"GET", "/api/v1/kv/bdata", ""},
		{"GET", "/api/v1/kv/bdata/k1", ""},
		{"PUT", "/api/v1/kv/bdata/k1", `"overwritten-by-alpha"`},
		{"DELETE", "/api/v1/kv/bdata/k1", ""},
		{"DELETE", "/api/v1/kv/bdata", ""},
		{"GET", "/api/v1/objects/bfiles", ""},
		{"GET", "/api/v1/objects/bfiles/doc.txt", ""},
		{"PUT", "/api/v1/objects/bfiles/doc.txt", "overwritten-by-alpha"},
		{"DELETE", "/api/v1/objects/bfiles/doc.txt", ""},
		{"DELETE", "/api/v1/objects/bfiles", ""},
		{"GET", "/api/v1/functions/secretfn/triggers", ""},
		{"GET", "/api/v1/functions/secretfn/triggers/btrig", ""},
		{"PUT", "/api/v1/functions/secretfn/triggers/sneak", `{"kind":"topic","topic":{"topic":"btopic"}}`},
		{"DELETE", "/api/v1/functions/secretfn/triggers/btrig", ""},
		{"DELETE", "/api/v1/topics/btopic", ""},
		{"GET", "/api/v1/functions/secretfn/dlq", ""},
		{"POST", "/api/v1/functions/secretfn/dlq/replay", ""},
		{"DELETE", "/api/v1/functions/secretfn/dlq", ""},
	}
	for _, c := range refused {
		t.Run("refused "+c.method+" "+c.path+" "+c.body, func(t *testing.T) {
			var body []byte
			var hdr []string
			if k, v, ok := strings.Cut(c.body, ": "); ok {
				hdr = []string{k, v}
			} else if c.body != "" {
				body = []byte(c.body)
			}
			status, b := call(t, e, keyA, c.method, c.path, body, hdr...)
			if status != 404 {
				t.Fatalf("status %d, want 404: %.300s", status, b)
			}
			errCode(t, b)
			noLeak(t, b)
		})
	}

	// A's keys naming B's functions in the path (/t/beta/fn/…) get the very
	// answer a missing function gets, for key and user (end-user tokens)
	// functions, aliases and versions; a public function answers everyone.
	for fn, mode := range map[string]string{"userfn": "user", "pubfn": "public"} {
		if status, b := deployAs(t, e, keyB, fn, code, registry.Config{Auth: mode}); status != 201 {
			t.Fatalf("B deploys %s: %d %s", fn, status, b)
		}
	}
	if status, b := call(t, e, "", "GET", "/t/beta/fn/pubfn/sleep?ms=1", nil); status != 200 {
		t.Fatalf("B's public function without a key: %d %s", status, b)
	}
	for kname, k := range map[string]string{"full": keyA, "read": readA, "invoke": invokeA} {
		mstatus, missing := call(t, e, k, "GET", "/t/beta/fn/nosuchfn/sleep?ms=1", nil)
		if mstatus != 404 {
			t.Fatalf("A's %s key, missing function: %d %s", kname, mstatus, missing)
		}
		if status, b := call(t, e, k, "GET", "/t/beta/fn/pubfn/sleep?ms=1", nil); status != 200 {
			t.Fatalf("A's %s key, B's public function: %d %s", kname, status, b)
		}
		for _, fn := range []string{"secretfn", "secretfn@live", "secretfn@9", "userfn", "pubfn@9", "nosuchfn@live"} {
			t.Run("cross-tenant "+kname+" key "+fn, func(t *testing.T) {
				status, b := call(t, e, k, "GET", "/t/beta/fn/"+fn+"/sleep?ms=1", nil)
				name, _, _ := strings.Cut(fn, "@")
				want := strings.ReplaceAll(string(missing), "nosuchfn", name)
				if status != 404 || string(b) != want {
					t.Fatalf("got %d %s, want 404 %s (as a missing function)", status, b, want)
				}
				noLeak(t, b)
			})
		}
	}

	// An event A publishes to a topic named like B's finds no such topic.
	status, b := call(t, e, keyA, "POST", "/events/btopic", []byte(`{"specversion":"1.0","id":"1","source":"alpha","type":"t","data":{}}`),
		"Content-Type", "application/cloudevents+json")
	if status != 404 {
		t.Fatalf("A publishes to btopic: %d %s", status, b)
	}

	// Lists and reports A may read: 200, with none of B's names or data.
	lists := []string{
		"/api/v1/functions",
		"/api/v1/usage?by=function",
		"/api/v1/usage?by=tenant",
		"/api/v1/usage?function=secretfn",
		"/api/v1/secrets",
		"/api/v1/kv",
		"/api/v1/objects",
		"/api/v1/topics",
		"/api/v1/queues",
		"/api/v1/stats",
	}
	for _, p := range lists {
		t.Run("list "+p, func(t *testing.T) {
			status, b := call(t, e, keyA, "GET", p, nil)
			if status != 200 {
				t.Fatalf("status %d: %s", status, b)
			}
			noLeak(t, b)
			for _, name := range []string{"secretfn", "bdata", "bfiles", "bsecret", "btopic", `"beta`} {
				if strings.Contains(string(b), name) {
					t.Fatalf("A's answer names B's %s: %.400s", name, b)
				}
			}
		})
	}
	// A's usage of secretfn (a name it does not have) counts nothing.
	_, b = call(t, e, keyA, "GET", "/api/v1/usage?function=secretfn", nil)
	var rep struct{ Total struct{ Invocations int64 } }
	if err := json.Unmarshal(b, &rep); err != nil || rep.Total.Invocations != 0 {
		t.Fatalf("A's usage of secretfn: %v %s", err, b)
	}
	// /metrics names every tenant: not for A's key.
	if status, b := call(t, e, keyA, "GET", "/metrics", nil); status != 403 {
		t.Fatalf("/metrics with A's key: %d %.200s", status, b)
	}

	// S3 with A's credentials against B's bucket.
	t.Run("s3", func(t *testing.T) {
		var cr struct {
			AccessKeyID     string `json:"access_key_id"`
			SecretAccessKey string `json:"secret_access_key"`
		}
		if err := json.Unmarshal(mustCall(t, e, keyA, "GET", "/api/v1/objects-credentials", nil), &cr); err != nil || cr.AccessKeyID == "" {
			t.Fatalf("A's S3 credentials: %v", err)
		}
		mc, err := minio.New(strings.TrimPrefix(e.S3URL(), "http://"), &minio.Options{
			Creds: credentials.NewStaticV4(cr.AccessKeyID, cr.SecretAccessKey, ""), Region: "us-east-1",
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// HEAD has no body: a 404 is all a client can learn.
		if _, err := mc.StatObject(ctx, "bfiles", "doc.txt", minio.StatObjectOptions{}); err == nil || minio.ToErrorResponse(err).StatusCode != 404 {
			t.Fatalf("stat B's object: %v", err)
		}
		o, err := mc.GetObject(ctx, "bfiles", "doc.txt", minio.GetObjectOptions{})
		if err == nil {
			got, rerr := io.ReadAll(o)
			if rerr == nil || strings.Contains(string(got), bObjectBody) {
				t.Fatalf("A read B's object: %q %v", got, rerr)
			}
			err = rerr
		}
		if s3Code(err) != "NoSuchBucket" {
			t.Fatalf("get B's object: %v", err)
		}
		for obj := range mc.ListObjects(ctx, "bfiles", minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err == nil {
				t.Fatalf("A lists B's bucket: %+v", obj)
			}
			if s3Code(obj.Err) != "NoSuchBucket" {
				t.Fatalf("list B's bucket: %v", obj.Err)
			}
		}
		buckets, err := mc.ListBuckets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, bk := range buckets {
			if bk.Name == "bfiles" {
				t.Fatal("A's bucket list shows B's bucket")
			}
		}
		if err := mc.RemoveObject(ctx, "bfiles", "doc.txt", minio.RemoveObjectOptions{}); s3Code(err) != "NoSuchBucket" {
			t.Fatalf("remove B's object: %v", err)
		}
	})

	// A URL A may presign for a bucket named like B's reaches A's namespace only.
	t.Run("presign", func(t *testing.T) {
		var ps struct{ URL string }
		if err := json.Unmarshal(mustCall(t, e, keyA, "GET", "/api/v1/objects-presign?bucket=bfiles&key=doc.txt", nil), &ps); err != nil || ps.URL == "" {
			t.Fatalf("presign: %v", err)
		}
		resp, err := http.Get(ps.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(b), "NoSuchBucket") {
			t.Fatalf("A's presigned URL for bfiles/doc.txt: %d %.300s", resp.StatusCode, b)
		}
		noLeak(t, b)
	})

	// B's things are intact after everything A tried.
	if _, b := call(t, e, keyB, "GET", "/api/v1/kv/bdata/k1", nil); !strings.Contains(string(b), bKVValue) {
		t.Fatalf("B's KV value changed: %s", b)
	}
	if _, b := call(t, e, keyB, "GET", "/api/v1/objects/bfiles/doc.txt", nil); string(b) != bObjectBody {
		t.Fatalf("B's object changed: %s", b)
	}
	mustCall(t, e, keyB, "GET", "/api/v1/functions/secretfn/triggers/btrig", nil)
	mustCall(t, e, keyB, "GET", "/api/v1/functions/secretfn/aliases/live", nil)
	if _, b := call(t, e, keyB, "GET", "/api/v1/secrets", nil); !strings.Contains(string(b), "bsecret") || strings.Contains(string(b), bSecretValue) {
		t.Fatalf("B's secrets: %s", b)
	}
	if status, b := call(t, e, keyB, "GET", "/fn/secretfn/env?k=bsecret", nil); status != 200 {
		t.Fatalf("B invokes its function: %d %s", status, b)
	}

	// Bad keys get 401, keys without the scope 403.
	testenv.Eventually(t, 10*time.Second, func() error {
		if status, _ := call(t, e, expiredA, "GET", "/api/v1/functions", nil); status != 401 {
			return fmt.Errorf("expired key still works: %d", status)
		}
		return nil
	})
	authCases := []struct {
		name, method, path string
		header             []string
		body               []byte
		status             int
	}{
		{"no key, key function", "GET", "/t/alpha/fn/ownfn", nil, nil, 0},
		{"malformed key", "GET", "/api/v1/functions", []string{"Authorization", "Bearer nmb_zz"}, nil, 401},
		{"not a bearer", "GET", "/api/v1/functions", []string{"Authorization", "Basic YWxhZGRpbjpvcGVu"}, nil, 401},
		{"unknown key", "GET", "/api/v1/functions", []string{"Authorization", "Bearer nmb_0000000000000000_" + strings.Repeat("a", 43)}, nil, 401},
		{"revoked key", "GET", "/api/v1/functions", []string{"Authorization", "Bearer " + revokedA}, nil, 401},
		{"expired key", "GET", "/api/v1/functions", []string{"Authorization", "Bearer " + expiredA}, nil, 401},
		{"revoked key, invoke", "GET", "/fn/ownfn", []string{"Authorization", "Bearer " + revokedA}, nil, 401},
		{"expired key, async", "POST", "/async/ownfn", []string{"Authorization", "Bearer " + expiredA}, []byte("{}"), 401},
		{"revoked key, publish", "POST", "/events/t1", []string{"Authorization", "Bearer " + revokedA}, []byte("{}"), 401},
		{"read key writes kv", "PUT", "/api/v1/kv/abucket", []string{"Authorization", "Bearer " + readA}, []byte("{}"), 403},
		{"read key sets a secret", "PUT", "/api/v1/secrets/s1", []string{"Authorization", "Bearer " + readA}, []byte(`{"value":"v"}`), 403},
		{"read key publishes", "POST", "/events/t1", []string{"Authorization", "Bearer " + readA}, []byte("{}"), 403},
		{"invoke key reads functions", "GET", "/api/v1/functions", []string{"Authorization", "Bearer " + invokeA}, nil, 403},
		{"invoke key reads logs", "GET", "/api/v1/functions/ownfn/logs", []string{"Authorization", "Bearer " + invokeA}, nil, 403},
		{"tenant key lists tenants", "GET", "/api/v1/tenants", []string{"Authorization", "Bearer " + keyA}, nil, 403},
		{"tenant key creates keys", "POST", "/api/v1/keys", []string{"Authorization", "Bearer " + keyA}, []byte(`{"tenant":"beta","scopes":["admin"]}`), 403},
	}
	// ownfn needs a key from now on.
	if status, b := deployAs(t, e, keyA, "ownfn", code, registry.Config{Auth: "key"}); status != 201 {
		t.Fatalf("A redeploys: %d %s", status, b)
	}
	authCases[0].status = 401
	for _, c := range authCases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := e.Do(c.method, c.path, c.body, c.header...)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, c.status, b)
			}
			errCode(t, b)
		})
	}
	// The caller's API key never reaches the function's code.
	for _, hdr := range []string{"Authorization", "X-Api-Key"} {
		val := keyA
		if hdr == "Authorization" {
			val = "Bearer " + keyA
		}
		resp, b := e.Do("GET", "/fn/ownfn/header?k="+hdr, nil, hdr, val)
		if resp.StatusCode != 200 || string(b) != "header=" {
			t.Fatalf("function saw the caller's %s: %d %s", hdr, resp.StatusCode, b)
		}
	}
	// A read-only key deploying a function is refused with 403.
	if status, b := deployAs(t, e, readA, "another", code, registry.Config{}); status != 403 {
		t.Fatalf("read key deploys: %d %s", status, b)
	}
	// A read-only key invoking a key function is refused with 403.
	if status, b := call(t, e, readA, "GET", "/fn/ownfn", nil); status != 403 {
		t.Fatalf("read key invokes: %d %s", status, b)
	}
	// And the full key works.
	if status, b := call(t, e, keyA, "GET", "/fn/ownfn", nil); status != 200 {
		t.Fatalf("A invokes its own function: %d %s", status, b)
	}
}

// noLeak fails the test when an answer to tenant A carries tenant B's data.
func noLeak(t *testing.T, b []byte) {
	t.Helper()
	for _, v := range []string{bKVValue, bObjectBody, bSecretValue, bLogLine} {
		if strings.Contains(string(b), v) {
			t.Fatalf("answer carries B's data %q: %.400s", v, b)
		}
	}
}

// s3Code is the S3 error code of err ("" for nil or other errors).
func s3Code(err error) string {
	if err == nil {
		return ""
	}
	return minio.ToErrorResponse(err).Code
}

// TestTenantEventsStayInTenant proves that triggers see only their own
// tenant's events: tenants A and B both have a KV bucket "shared" and a topic
// "news" with triggers on them; B's writes and events come first on the
// streams, then A's, and A's function runs exactly once for each of A's.
func TestTenantEventsStayInTenant(t *testing.T) {
	e := testenv.Start(t)
	code := misbehave(t)
	createTenant(t, e, "alpha", "")
	createTenant(t, e, "beta", "")
	keys := map[string]string{}
	for _, tn := range []string{"alpha", "beta"} {
		keys[tn], _ = createKey(t, e, tn, "", "deploy", "invoke", "read")
		k := keys[tn]
		if status, b := deployAs(t, e, k, "watcher", code, registry.Config{}); status != 201 {
			t.Fatalf("%s deploys: %d %s", tn, status, b)
		}
		mustCall(t, e, k, "PUT", "/api/v1/kv/shared", []byte(`{}`))
		mustCall(t, e, k, "PUT", "/api/v1/topics/news", nil)
		mustCall(t, e, k, "PUT", "/api/v1/functions/watcher/triggers/on-kv", []byte(`{"kind":"kv","kv":{"bucket":"shared"}}`))
		mustCall(t, e, k, "PUT", "/api/v1/functions/watcher/triggers/on-news", []byte(`{"kind":"topic","topic":{"topic":"news"}}`))
	}
	event := func(tn string) []byte {
		return []byte(fmt.Sprintf(`{"specversion":"1.0","id":"%s-1","source":"%s","type":"note","data":{}}`, tn, tn))
	}
	for _, tn := range []string{"beta", "alpha"} { // B first on every stream
		mustCall(t, e, keys[tn], "PUT", "/api/v1/kv/shared/k", []byte(`"`+tn+`"`))
		mustCall(t, e, keys[tn], "POST", "/events/news", event(tn), "Content-Type", "application/cloudevents+json")
	}
	for _, tn := range []string{"alpha", "beta"} {
		testenv.Eventually(t, 30*time.Second, func() error {
			byTrigger := map[string]int{}
			for _, r := range invocationRecords(t, e, tn, "watcher") {
				byTrigger[r.Trigger]++
			}
			if byTrigger["kv"] < 1 || byTrigger["topic"] < 1 {
				return fmt.Errorf("%s's watcher ran %v", tn, byTrigger)
			}
			if byTrigger["kv"] != 1 || byTrigger["topic"] != 1 || len(byTrigger) != 2 {
				t.Fatalf("%s's watcher ran for another tenant's events: %v", tn, byTrigger)
			}
			return nil
		})
	}
}
