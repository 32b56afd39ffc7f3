package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// result is one load run.
type result struct {
	requests int
	errors   int
	elapsed  time.Duration
	cpu      time.Duration   // CPU time of this whole process (server and load) during the run
	lat      []time.Duration // sorted
}

func (r result) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// cpuPerRequest is the process's CPU time per request: on a saturated
// machine throughput is its inverse, and it is steadier when the machine's
// speed varies from one moment to the next.
func (r result) cpuPerRequest() time.Duration {
	if r.requests == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.requests)
}

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat)-1) * p)
	return r.lat[i]
}

// client is a keep-alive HTTP client sized for c connections.
func client(c int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: c * 2, MaxIdleConnsPerHost: c * 2, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// load sends GET url from c workers for d and records each latency.
func load(url string, c int, d time.Duration) result { return loadHeader(url, nil, c, d) }

// loadHeader is load with header on every request.
func loadHeader(url string, header http.Header, c int, d time.Duration) result {
	cl := client(c)
	defer cl.CloseIdleConnections()
	get := func() (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		return cl.Do(req)
	}
	// Warm every connection first.
	for i := 0; i < c; i++ {
		if resp, err := get(); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	var stop atomic.Bool
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), processCPU()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024) // grows as needed: a large buffer per worker and run would be fresh memory to fault in each time
			for !stop.Load() {
				t0 := time.Now()
				resp, err := get()
				if err != nil {
					errs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	el, cpu := time.Since(start), processCPU()-cpu0
	slices.Sort(all)
	return result{requests: len(all), errors: int(errs.Load()), elapsed: el, cpu: cpu, lat: all}
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3) }
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6) }

func pctOf(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(float64(len(s)-1)*p)]
}
