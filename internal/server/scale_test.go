package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/scaler"
	"github.com/nimbusfn/nimbus/internal/testenv"
)

func poolStats(e *testenv.Env, fn string, version int) scaler.Stats {
	return e.Invoker.Stats("default", fn)[version]
}

// get sends n concurrent GETs and returns their status codes and headers.
func burst(t *testing.T, url string, n int) ([]int, []http.Header) {
	t.Helper()
	codes := make([]int, n)
	hdrs := make([]http.Header, n)
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
	defer cl.CloseIdleConnections()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			resp, err := cl.Get(url)
			if err != nil {
				codes[i] = -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i], hdrs[i] = resp.StatusCode, resp.Header
		}(i)
	}
	close(start)
	wg.Wait()
	return codes, hdrs
}

func TestBurstFromZeroStartsOnlyWhatIsNeeded(t *testing.T) {
	e := testenv.Start(t)
	const max = 8
	e.Deploy("mis", misbehave(t), registry.Config{Scale: registry.Scale{Max: max}})
	if st := poolStats(e, "mis", 1); st.Idle+st.Busy+st.Starting != 0 {
		t.Fatalf("instances before any request: %+v", st)
	}
	codes, _ := burst(t, e.URL+"/fn/mis/sleep?ms=20", 200)
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d answered %d", i, c)
		}
	}
	st := poolStats(e, "mis", 1)
	// concurrency 1: ceil(200/1) = 200, capped by scale.max.
	if st.ColdStarts > max || st.ColdStarts == 0 {
		t.Fatalf("cold starts = %d, want 1..%d", st.ColdStarts, max)
	}
	t.Logf("200 concurrent requests from zero: %d cold starts (max %d)", st.ColdStarts, max)
}

func TestOverloadGets429WithRetryAfter(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{
		Scale: registry.Scale{Max: 2},
		Queue: registry.Queue{Max: 2, Timeout: registry.Duration(300 * time.Millisecond)},
	})
	codes, hdrs := burst(t, e.URL+"/fn/mis/sleep?ms=1500", 12)
	ok, throttled := 0, 0
	for i, c := range codes {
		switch c {
		case 200:
			ok++
		case 429:
			throttled++
			if hdrs[i].Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		default:
			t.Errorf("request %d answered %d", i, c)
		}
	}
	if ok+throttled != 12 || throttled == 0 || ok < 2 {
		t.Fatalf("ok=%d throttled=%d: every request must be answered, the excess with 429", ok, throttled)
	}
	if st := poolStats(e, "mis", 1); st.ColdStarts > 2 {
		t.Fatalf("started %d instances past scale.max=2", st.ColdStarts)
	}
}

func TestIdleScalesToZero(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{Scale: registry.Scale{Idle: registry.Duration(500 * time.Millisecond)}})
	if resp, _ := e.Get("/fn/mis/"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if st := poolStats(e, "mis", 1); st.Idle != 1 {
		t.Fatalf("after one call: %+v", st)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := poolStats(e, "mis", 1); st.Idle+st.Busy+st.Starting != 0 {
			return fmt.Errorf("still %+v", st)
		}
		return nil
	})
	// And it comes back on demand.
	if resp, body := e.Get("/fn/mis/"); resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok 1") {
		t.Fatalf("after scale to zero: %d %s", resp.StatusCode, body)
	}
}

func TestMinInstancesWarmAfterDeployAndRestart(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{Scale: registry.Scale{Min: 2, Idle: registry.Duration(200 * time.Millisecond)}})
	testenv.Eventually(t, 20*time.Second, func() error {
		if st := poolStats(e, "mis", 1); st.Idle != 2 {
			return fmt.Errorf("pool: %+v", st)
		}
		return nil
	})
	// Idle never goes below min.
	time.Sleep(600 * time.Millisecond) // longer than idle: nothing may close
	if st := poolStats(e, "mis", 1); st.Idle != 2 {
		t.Fatalf("min instances closed when idle: %+v", st)
	}
}

func TestTrapEveryTenthKeepsServing(t *testing.T) {
	e := testenv.Start(t)
	e.Deploy("mis", misbehave(t), registry.Config{})
	ok, crashed := 0, 0
	for i := 0; i < 40; i++ {
		resp, body := e.Get("/fn/mis/every10")
		switch resp.StatusCode {
		case 200:
			ok++
		case 502:
			crashed++
			if errCode(t, body) != "function_crashed" {
				t.Fatalf("trap answered %s", body)
			}
		default:
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// Each instance counts its own calls; a trap replaces it, so the tenth
	// call of every instance fails and the other nine succeed.
	if crashed != 4 || ok != 36 {
		t.Fatalf("ok=%d crashed=%d, want 36 and 4", ok, crashed)
	}
	if st := poolStats(e, "mis", 1); st.Discarded != 4 {
		t.Fatalf("discarded %d instances, want 4", st.Discarded)
	}
}
