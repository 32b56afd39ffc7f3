package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"
)

func init() {
	addSuite("warm", "Warm throughput: hello through the gateway vs a bare net/http handler", warmSuite)
	addSuite("cold", "Cold start: first invocation after deploy (20 distinct functions)", coldSuite)
}

// buildExample builds examples/NAME for wasip1 (a reactor when reactor).
func buildExample(name string, reactor bool) ([]byte, error) {
	dir, _ := os.MkdirTemp("", "nimbus-bench-build-")
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, name+".wasm")
	args := []string{"build", "-trimpath", "-o", out}
	if reactor {
		args = append(args, "-buildmode=c-shared")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = filepath.Join("examples", name)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %v\n%s", name, err, b)
	}
	return os.ReadFile(out)
}

// deploy uploads code as function name with config cfg (JSON object).
func deploy(base, name string, code []byte, cfg map[string]any) error {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("name", name)
	cb, _ := json.Marshal(cfg)
	mw.WriteField("config", string(cb))
	fw, _ := mw.CreateFormFile("code", name+".wasm")
	fw.Write(code)
	mw.Close()
	resp, err := http.Post(base+"/api/v1/functions", mw.FormDataContentType(), &buf)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("deploy %s: %d %s", name, resp.StatusCode, b)
	}
	return nil
}

// bareHello serves the same answer as examples/hello from a plain handler.
func bareHello() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Hello, %s!\n", name)
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func warmSuite() error {
	code, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	// Enough warm instances for every connection.
	if err := deploy(s.URL(), "hello", code, map[string]any{"scale": map[string]any{"min": *conns}}); err != nil {
		return err
	}
	bare, bstop, err := bareHello()
	if err != nil {
		return err
	}
	defer bstop()
	// Interleave to share the machine's noise fairly: bare, nimbus, bare, nimbus.
	var b, n result
	for i := 0; i < 2; i++ {
		rb := load(bare+"/?name=bench", *conns, *duration/2)
		rn := load(s.URL()+"/fn/hello?name=bench", *conns, *duration/2)
		b = merge(b, rb)
		n = merge(n, rn)
	}
	if *cpuProf != "" {
		if err := profileLoad(*cpuProf, s.URL()+"/fn/hello?name=bench"); err != nil {
			return err
		}
		if err := profileLoad(*cpuProf+".bare", bare+"/?name=bench"); err != nil {
			return err
		}
	}
	fmt.Printf("%d connections, %s per side, keep-alive, loopback.\n\n", *conns, *duration)
	fmt.Println("| target | req/s | p50 | p99 | CPU per request | errors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	fmt.Printf("| bare net/http | %.0f | %s | %s | %s | %d |\n", b.rps(), us(b.pct(.5)), us(b.pct(.99)), us(b.cpuPerRequest()), b.errors)
	fmt.Printf("| nimbus /fn/hello (wasm) | %.0f | %s | %s | %s | %d |\n", n.rps(), us(n.pct(.5)), us(n.pct(.99)), us(n.cpuPerRequest()), n.errors)
	fmt.Printf("\n**ratio** nimbus/bare throughput = **%.2f**; added p50 = %s; CPU per request (this process: server and load generator) %s more\n", n.rps()/b.rps(), us(n.pct(.5)-b.pct(.5)), us(n.cpuPerRequest()-b.cpuPerRequest()))
	return nil
}

// profileLoad loads url for the run's duration under a CPU profile written
// to file, and prints how much CPU the process used per request.
func profileLoad(file, url string) error { return profileLoadHeader(file, url, nil) }

// profileLoadHeader is profileLoad with header on every request.
func profileLoadHeader(file, url string, header http.Header) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	r := loadHeader(url, header, *conns, *duration)
	pprof.StopCPUProfile()
	fmt.Fprintf(os.Stderr, "profile %s: %.0f req/s, %s of CPU per request (server and load generator)\n", file, r.rps(), us(r.cpuPerRequest()))
	return nil
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func merge(a, b result) result {
	lat := append(append([]time.Duration{}, a.lat...), b.lat...)
	slices.Sort(lat)
	return result{requests: a.requests + b.requests, errors: a.errors + b.errors, elapsed: a.elapsed + b.elapsed, cpu: a.cpu + b.cpu, lat: lat}
}

func coldSuite() error {
	code, err := buildExample("hello", true)
	if err != nil {
		return err
	}
	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	cl := client(1)
	var first, warm []time.Duration
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("cold-%02d", i)
		if err := deploy(s.URL(), name, code, map[string]any{"env": map[string]string{"N": name}}); err != nil {
			return err
		}
		t0 := time.Now()
		resp, err := cl.Get(s.URL() + "/fn/" + name)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first = append(first, time.Since(t0))
		t0 = time.Now()
		resp, err = cl.Get(s.URL() + "/fn/" + name)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		warm = append(warm, time.Since(t0))
	}
	fmt.Println("Each function is deployed (compiled at deploy), then called twice over HTTP on loopback.")
	fmt.Println()
	fmt.Println("| call | p50 | p99 |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| first call (cold start, Go wasm hello) | %s | %s |\n", ms(pctOf(first, .5)), ms(pctOf(first, .99)))
	fmt.Printf("| second call (warm) | %s | %s |\n", ms(pctOf(warm, .5)), ms(pctOf(warm, .99)))
	return nil
}
