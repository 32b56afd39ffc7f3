package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func init() {
	addSuite("burst", "Burst: 0 → 64 concurrent clients on a function at zero instances", burstSuite)
	addSuite("memory", "Memory: idle functions and warm instances", memorySuite)
}

func burstSuite() error {
	code, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	if err := deploy(s.URL(), "hello", code, map[string]any{"scale": map[string]any{"max": 64}}); err != nil {
		return err
	}
	const clients, each = 64, 20
	cl := client(clients)
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := 0
	var firsts []time.Duration
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				t0 := time.Now()
				resp, err := cl.Get(s.URL() + "/fn/hello")
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				if !ok {
					errs++
				}
				if j == 0 {
					firsts = append(firsts, time.Since(t0))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	fmt.Printf("64 clients start at once against a function with no instance; each sends %d requests.\n\n", each)
	fmt.Println("| metric | value |")
	fmt.Println("| --- | --- |")
	fmt.Printf("| errors | %d of %d |\n", errs, clients*each)
	fmt.Printf("| first response of each client p50 / p99 / max | %s / %s / %s |\n", ms(pctOf(firsts, .5)), ms(pctOf(firsts, .99)), ms(pctOf(firsts, 1)))
	fmt.Printf("| all %d requests served in | %s |\n", clients*each, ms(total))
	return nil
}

// rss returns this process's resident set size in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func memorySuite() error {
	code, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	const fns = 1000
	// One deploy first, so the runtime and caches exist before measuring.
	if err := deploy(s.URL(), "warm", code, nil); err != nil {
		return err
	}
	settle()
	before := rss()
	t0 := time.Now()
	for i := 0; i < fns; i++ {
		if err := deploy(s.URL(), fmt.Sprintf("idle-%04d", i), code, nil); err != nil {
			return err
		}
	}
	deployTime := time.Since(t0)
	settle()
	after := rss()
	fmt.Printf("%d functions deployed (same module, compiled once by digest), none called: zero instances each.\n\n", fns)
	fmt.Println("| metric | value |")
	fmt.Println("| --- | --- |")
	fmt.Printf("| RSS growth per deployed idle function | %.1f KB (RSS before %d MB, after %d MB) |\n", float64(after-before)/fns/1024, before>>20, after>>20)
	fmt.Printf("| deploy time per function (API, same code) | %s |\n", ms(deployTime/fns))

	// Warm instances: hold N requests in flight at once on one function so
	// that N instances exist, then measure RSS per instance.
	const warm = 200
	if err := deploy(s.URL(), "many", code, map[string]any{"scale": map[string]any{"min": warm, "max": warm}}); err != nil {
		return err
	}
	settle()
	base := rss()
	deadline := time.Now().Add(3 * time.Minute)
	idle := 0
	for time.Now().Before(deadline) && idle < warm {
		resp, err := http.Get(s.URL() + "/api/v1/functions/many")
		if err == nil {
			var fv struct {
				Instances struct{ Idle int } `json:"instances"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&fv)
			resp.Body.Close()
			idle = fv.Instances.Idle
		}
		time.Sleep(100 * time.Millisecond)
	}
	if idle == 0 {
		return fmt.Errorf("no warm instance of \"many\" came up")
	}
	settle()
	grown := rss()
	fmt.Printf("| RSS per warm instance of hello (%d instances kept by scale.min) | %.2f MB |\n", idle, float64(grown-base)/float64(idle)/(1<<20))
	return nil
}

func settle() {
	for i := 0; i < 3; i++ {
		runtimeGC()
		time.Sleep(200 * time.Millisecond)
	}
}
