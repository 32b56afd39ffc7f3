package metering

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

func TestUsageRoute(t *testing.T) {
	env := newMeterEnv(t)
	now := time.Now()
	for i, tenant := range []string{"acme", "acme", "beta"} {
		env.pub.Record(&Record{ID: "r" + string(rune('a'+i)), Tenant: tenant, Function: "hello", Outcome: "ok", DurationNS: 1_500_000, MemoryMB: 1024, Start: now})
	}
	waitApplied(t, env.m, 3)
	mux := http.NewServeMux()
	env.m.Routes(mux, func(r *http.Request) string { return r.Header.Get("X-Test-Tenant") },
		func(r *http.Request) bool { return r.Header.Get("X-Test-Admin") == "1" })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path, tenant string, admin bool) (int, []byte) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("X-Test-Tenant", tenant)
		if admin {
			req.Header.Set("X-Test-Admin", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get("/api/v1/usage?since=30d&by=function", "acme", false)
	var rep UsageReport
	if code != 200 || json.Unmarshal(body, &rep) != nil {
		t.Fatalf("usage: %d %s", code, body)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Key != "hello" || rep.Total.Invocations != 2 || rep.Total.BilledMS != 4 {
		t.Fatalf("acme usage %s", body)
	}
	for _, field := range []string{`"invocations":2`, `"gb_seconds":0.004`, `"cost":`, `"cold_starts":0`, `"billed_ms":4`, `"per_gb_second":0.0000166667`} {
		if !strings.Contains(string(body), field) {
			t.Errorf("answer lacks %s: %s", field, body)
		}
	}
	if code, body := get("/api/v1/usage?all=true&by=tenant", "acme", true); code != 200 || !strings.Contains(string(body), `"key":"beta"`) {
		t.Fatalf("admin all tenants: %d %s", code, body)
	}
	for _, c := range []struct {
		path  string
		code  apierr.Code
		admin bool
	}{
		{"/api/v1/usage?all=true", apierr.Forbidden, false},
		{"/api/v1/usage?by=week", apierr.BadRequest, false},
		{"/api/v1/usage?since=yesterday", apierr.BadRequest, false},
		{"/api/v1/usage?function=Bad.Name", apierr.InvalidName, false},
	} {
		code, body := get(c.path, "acme", c.admin)
		if got, _, _ := apierr.Decode(body); code != c.code.Status || got != c.code.Name {
			t.Errorf("%s: %d %s, want %d %s", c.path, code, body, c.code.Status, c.code.Name)
		}
	}
}
