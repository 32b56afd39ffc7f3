package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

// TestAsyncAndScheduleThroughTheServer checks the event plane's wiring with
// a real wasm function: an async invocation completes with its result, and a
// schedule trigger invokes the function.
func TestAsyncAndScheduleThroughTheServer(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("echo", echo(t), registry.Config{})
	resp, body := e.Do("POST", "/async/echo/path", []byte(`{"hello":"async"}`))
	if resp.StatusCode != 202 {
		t.Fatalf("async: %d %s", resp.StatusCode, body)
	}
	var acc struct{ ID string }
	if err := json.Unmarshal(body, &acc); err != nil || acc.ID == "" {
		t.Fatalf("async answer: %s", body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, b := e.Get("/api/v1/invocations/" + acc.ID)
		if !strings.Contains(string(b), "succeeded") {
			return fmt.Errorf("status: %s", b)
		}
		return nil
	})
	if resp, body := e.Do("POST", "/async/nope", []byte(`{}`)); resp.StatusCode != 404 {
		t.Fatalf("async to a missing function: %d %s", resp.StatusCode, body)
	}

	// A schedule trigger runs the function every second.
	if resp, body := e.Do("PUT", "/api/v1/functions/echo/triggers/tick", []byte(`{"kind":"schedule","schedule":{"cron":"@every 1s"}}`)); resp.StatusCode >= 300 {
		t.Fatalf("trigger: %d %s", resp.StatusCode, body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, b := e.Get("/api/v1/stats")
		var st struct {
			Functions []struct {
				Function    string
				Invocations int
			}
		}
		_ = json.Unmarshal(b, &st)
		for _, f := range st.Functions {
			if f.Function == "echo" && f.Invocations >= 3 { // 1 async + ≥ 2 ticks
				return nil
			}
		}
		return fmt.Errorf("not enough invocations yet: %s", b)
	})
	if resp, body := e.Do("PUT", "/api/v1/functions/echo/triggers/bad", []byte(`{"kind":"schedule","schedule":{"cron":"every tuesday"}}`)); resp.StatusCode != 400 {
		t.Fatalf("bad cron: %d %s", resp.StatusCode, body)
	}
}
