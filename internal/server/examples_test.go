package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// exTodo is a todo as the todo example answers it.
type exTodo struct {
	ID         string `json:"id"`
	Title      string `json:"title"`
	Done       bool   `json:"done"`
	Attachment *struct {
		ContentType string `json:"content_type"`
		Size        int    `json:"size"`
	} `json:"attachment"`
}

// exUser signs a user up and logs in, returning the access token.
func exUser(t *testing.T, e *testenv.Env, email string) string {
	t.Helper()
	creds := []byte(fmt.Sprintf(`{"email":%q,"password":"correct horse battery"}`, email))
	if resp, b := e.Do("POST", "/auth/default/signup", creds); resp.StatusCode != http.StatusCreated {
		t.Fatalf("signup %s: %d %s", email, resp.StatusCode, b)
	}
	resp, b := e.Do("POST", "/auth/default/login", creds)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("login %s: %d %s", email, resp.StatusCode, b)
	}
	return tok.AccessToken
}

func TestTodoExample(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("todo", testenv.BuildWasm(t, "examples/todo", testenv.Reactor), registry.Config{Auth: "user"})
	alice := exUser(t, e, "alice@example.com")
	bob := exUser(t, e, "bob@example.com")
	as := func(token, method, path string, body []byte, header ...string) (int, []byte) {
		t.Helper()
		if token != "" {
			header = append(header, "Authorization", "Bearer "+token)
		}
		resp, b := e.Do(method, path, body, header...)
		return resp.StatusCode, b
	}

	// No token: refused by Nimbus before the function runs.
	if code, b := as("", "GET", "/fn/todo/todos", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d %s", code, b)
	}
	if code, b := as("not-a-jwt", "GET", "/fn/todo/todos", nil); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d %s", code, b)
	}

	// Alice's first list: empty (no bucket yet).
	if code, b := as(alice, "GET", "/fn/todo/todos", nil); code != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("empty list: %d %s", code, b)
	}
	code, b := as(alice, "POST", "/fn/todo/todos", []byte(`{"title":"buy milk"}`))
	var td exTodo
	if code != http.StatusCreated || json.Unmarshal(b, &td) != nil || td.ID == "" || td.Title != "buy milk" {
		t.Fatalf("create: %d %s", code, b)
	}
	if code, b := as(alice, "POST", "/fn/todo/todos", []byte(`{"title":"walk the dog","done":true}`)); code != http.StatusCreated {
		t.Fatalf("create 2: %d %s", code, b)
	}
	if code, b := as(alice, "POST", "/fn/todo/todos", []byte(`{"nope":1`)); code != http.StatusBadRequest {
		t.Fatalf("bad body: %d %s", code, b)
	}
	code, b = as(alice, "GET", "/fn/todo/todos", nil)
	var list []exTodo
	if code != 200 || json.Unmarshal(b, &list) != nil || len(list) != 2 || list[0].ID != td.ID {
		t.Fatalf("list: %d %s", code, b)
	}
	code, b = as(alice, "PUT", "/fn/todo/todos/"+td.ID, []byte(`{"done":true}`))
	if code != 200 || json.Unmarshal(b, &td) != nil || !td.Done || td.Title != "buy milk" {
		t.Fatalf("update: %d %s", code, b)
	}

	// Attachment: stored in the attachments bucket, read back.
	code, b = as(alice, "PUT", "/fn/todo/todos/"+td.ID+"/attachment", []byte("receipt: 1 milk"), "Content-Type", "text/plain")
	if code != 200 || json.Unmarshal(b, &td) != nil || td.Attachment == nil || td.Attachment.Size != 15 {
		t.Fatalf("attach: %d %s", code, b)
	}
	resp, body := e.Do("GET", "/fn/todo/todos/"+td.ID+"/attachment", nil, "Authorization", "Bearer "+alice)
	if resp.StatusCode != 200 || string(body) != "receipt: 1 milk" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("attachment: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// Bob sees none of it.
	if code, b := as(bob, "GET", "/fn/todo/todos", nil); code != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("bob's list: %d %s", code, b)
	}
	for _, p := range []string{"/fn/todo/todos/" + td.ID, "/fn/todo/todos/" + td.ID + "/attachment"} {
		if code, b := as(bob, "GET", p, nil); code != http.StatusNotFound {
			t.Fatalf("bob GET %s: %d %s", p, code, b)
		}
	}
	if code, b := as(bob, "DELETE", "/fn/todo/todos/"+td.ID, nil); code != http.StatusNotFound {
		t.Fatalf("bob DELETE: %d %s", code, b)
	}
	if code, _ := as(alice, "GET", "/fn/todo/todos/"+td.ID, nil); code != 200 {
		t.Fatalf("alice's todo gone after bob's delete: %d", code)
	}

	// The documents are where the README says: KV todos/USERID/TODOID.
	if resp, b := e.Get("/api/v1/kv/todos"); resp.StatusCode != 200 || !strings.Contains(string(b), td.ID) {
		t.Fatalf("kv listing: %d %s", resp.StatusCode, b)
	}

	if code, b := as(alice, "DELETE", "/fn/todo/todos/"+td.ID, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, b)
	}
	if code, _ := as(alice, "GET", "/fn/todo/todos/"+td.ID, nil); code != http.StatusNotFound {
		t.Fatalf("get after delete: %d", code)
	}
}

func TestPipelineExample(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("pipeline", testenv.BuildWasm(t, "examples/pipeline", testenv.Reactor), registry.Config{})
	must := func(method, path string, body []byte, header ...string) {
		t.Helper()
		if resp, b := e.Do(method, path, body, header...); resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	must("PUT", "/api/v1/objects/uploads", nil)
	must("PUT", "/api/v1/functions/pipeline/triggers/csv-uploads",
		[]byte(`{"kind":"objects","objects":{"bucket":"uploads","suffix":".csv","events":["object.created"]}}`))
	must("PUT", "/api/v1/objects/uploads/notes.txt", []byte("not a csv"), "Content-Type", "text/plain")
	csv := "item,price,qty\napple,1.5,4\npear,2.5,2\nfig,4,1\n"
	must("PUT", "/api/v1/objects/uploads/data.csv", []byte(csv), "Content-Type", "text/csv")

	var report struct {
		Source  string   `json:"source"`
		Rows    int      `json:"rows"`
		Columns []string `json:"columns"`
		Numeric map[string]struct {
			Count int     `json:"count"`
			Sum   float64 `json:"sum"`
			Max   float64 `json:"max"`
		} `json:"numeric"`
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, b := e.Get("/api/v1/objects/reports/data.json")
		if resp.StatusCode != 200 {
			return fmt.Errorf("report: %d %s", resp.StatusCode, b)
		}
		return json.Unmarshal(b, &report)
	})
	if report.Source != "uploads/data.csv" || report.Rows != 3 || strings.Join(report.Columns, ",") != "item,price,qty" ||
		report.Numeric["price"].Sum != 8 || report.Numeric["qty"].Max != 4 || report.Numeric["price"].Count != 3 {
		t.Fatalf("report: %+v", report)
	}
	if _, ok := report.Numeric["item"]; ok {
		t.Fatalf("text column summarised: %+v", report)
	}
	resp, b := e.Get("/api/v1/kv/rows/data.csv/2")
	var row map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &row) != nil || row["item"] != "pear" || row["price"] != 2.5 {
		t.Fatalf("row 2: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.Get("/api/v1/kv/rows/data.csv/4"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("row 4: %d %s", resp.StatusCode, b)
	}
	// The .txt upload did not match the trigger's suffix: no report for it.
	if resp, _ := e.Get("/api/v1/objects/reports/notes.json"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("notes.txt was processed: %d", resp.StatusCode)
	}
}
