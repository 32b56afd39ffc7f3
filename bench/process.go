package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/runtime/lambda"
)

func init() {
	addSuite("process", "Process runtimes: warm proxy overhead and Lambda cold start vs bare process", processSuite)
}

// buildNative builds examples/NAME for this machine.
func buildNative(name string) ([]byte, string, error) {
	dir, _ := os.MkdirTemp("", "nimbus-bench-native-")
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = filepath.Join("examples", name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("build %s: %v\n%s", name, err, b)
	}
	data, err := os.ReadFile(out)
	return data, out, err
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// bareStart starts bin with PORT set and returns the time until it answered
// its first request. It polls the port with bare connects at most 200µs
// apart (a refused connect costs microseconds), so that polling adds little
// to the baseline, then sends the request on the connection that got in.
func bareStart(bin string) (time.Duration, error) {
	port := freePort()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	t0 := time.Now()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + strconv.Itoa(port)}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for wait := 50 * time.Microsecond; time.Since(t0) < 10*time.Second; wait = min(wait*2, 200*time.Microsecond) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			time.Sleep(wait)
			continue
		}
		tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
		resp, err := tr.RoundTrip(must(http.NewRequest("GET", "http://"+addr+"/", nil)))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		return time.Since(t0), nil
	}
	return 0, fmt.Errorf("%s did not answer", bin)
}

// bareLambdaStart starts the Lambda bootstrap bin with nothing around it
// but the least Runtime API that serves it one event (what a bare process
// start-and-answer is for a Lambda function), and returns the time until
// its response arrived.
func bareLambdaStart(bin string) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	// The event Nimbus builds for the same GET through its gateway: what
	// the bootstrap does with its event is the function's work, not
	// Nimbus's.
	event, err := lambda.HTTPEvent(&runtime.Request{
		Method: http.MethodGet, Path: "/", Host: "127.0.0.1:8080", RemoteAddr: "127.0.0.1:40000", InvocationID: "bare",
		Header: http.Header{"User-Agent": {"Go-http-client/1.1"}, "Accept-Encoding": {"gzip"}},
	}, nil, time.Now())
	if err != nil {
		return 0, err
	}
	done := make(chan []byte, 1)
	var served atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next":
			if served.Swap(true) {
				<-r.Context().Done() // one event only
				return
			}
			h := w.Header()
			h.Set("Lambda-Runtime-Aws-Request-Id", "bare")
			h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
			h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:local:000000000000:function:bare")
			h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
			w.Write(event)
		case r.Method == http.MethodPost && r.URL.Path == "/2018-06-01/runtime/invocation/bare/response":
			b, _ := io.ReadAll(r.Body)
			w.WriteHeader(http.StatusAccepted)
			done <- b
		default:
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	t0 := time.Now()
	cmd := exec.Command(bin)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String()}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	select {
	case b := <-done:
		d := time.Since(t0)
		if !bytes.Contains(b, []byte(`"statusCode":200`)) {
			return 0, fmt.Errorf("%s answered %s", bin, b)
		}
		return d, nil
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("%s did not answer", bin)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func processSuite() error {
	web, webBin, err := buildNative("webserver")
	if err != nil {
		return err
	}
	lam, lamBin, err := buildNative("lambda-go")
	if err != nil {
		return err
	}
	s, stop, err := startNimbus()
	if err != nil {
		return err
	}
	defer stop()
	if err := deploy(s.URL(), "web", web, map[string]any{"runtime": "process", "concurrency": 64, "scale": map[string]any{"min": 1}}); err != nil {
		return err
	}
	// Direct baseline: the same server binary, started by hand.
	port := freePort()
	cmd := exec.Command(webBin)
	cmd.Env = []string{"PORT=" + strconv.Itoa(port)}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	direct := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if _, err := bareWait(direct); err != nil {
		return err
	}
	// A loopback call's latency here drifts by tens of µs within seconds,
	// as much as the proxy adds: short segments, alternating which side
	// goes first, put the drift on both sides alike.
	const warmRounds = 8
	var d, n result
	var added []time.Duration
	urls := [2]string{direct, s.URL() + "/fn/web/"}
	for i := 0; i < warmRounds; i++ {
		var r [2]result // direct, through Nimbus; round i starts with side i%2
		for k := range 2 {
			j := (i + k) % 2
			r[j] = load(urls[j], *conns, *duration/(2*warmRounds))
		}
		added = append(added, r[1].pct(.5)-r[0].pct(.5))
		d, n = merge(d, r[0]), merge(n, r[1])
	}
	fmt.Printf("Warm: the examples/webserver binary called directly vs through /fn/ (process runtime, sandboxed), %d connections, %d interleaved rounds.\n\n", *conns, warmRounds)
	fmt.Println("| target | req/s | p50 | p99 |")
	fmt.Println("| --- | --- | --- | --- |")
	fmt.Printf("| direct | %.0f | %s | %s |\n", d.rps(), us(d.pct(.5)), us(d.pct(.99)))
	fmt.Printf("| nimbus process runtime | %.0f | %s | %s |\n", n.rps(), us(n.pct(.5)), us(n.pct(.99)))
	fmt.Printf("\n**ratio** %.2f of direct throughput; added p50 = %s (median of the rounds' differences %s)\n\n", n.rps()/d.rps(), us(n.pct(.5)-d.pct(.5)), us(pctOf(added, .5)))

	// Cold: Lambda bootstrap through Nimbus vs bare process start-and-answer.
	// A process start here takes 12-30 ms and varies by several ms from one
	// to the next (most of it the Go runtime's own start-up), so each round
	// takes one sample of every kind back to back: drift in the machine
	// falls on all of them alike. The figure is the difference of the
	// medians; the median of the rounds' paired differences is printed too.
	//
	// lamz scales from zero each round: it ran before and went back to zero
	// instances, and its spare (made after its last start) is ready.
	if err := deploy(s.URL(), "lamz", lam, map[string]any{"runtime": "lambda", "scale": map[string]any{"idle": "1ms"}}); err != nil {
		return err
	}
	zero := newColdSampler(s.URL(), "lamz")
	defer zero.close()
	for range 2 { // its first starts fault in what every later one finds ready
		if _, err := zero.sample(); err != nil {
			return err
		}
	}
	const samples = 25
	var bare, bareLam, cold, fromZero []time.Duration
	cl := client(1)
	for i := 0; i < samples; i++ {
		// The previous round's scale-from-zero instance is torn down when
		// the scaler takes lamz back to zero: not during this round's
		// other samples.
		if err := zero.waitZero(); err != nil {
			return err
		}
		b, err := bareStart(webBin)
		if err != nil {
			return err
		}
		bare = append(bare, b)
		if b, err = bareLambdaStart(lamBin); err != nil {
			return err
		}
		bareLam = append(bareLam, b)
		name := fmt.Sprintf("lam-%02d", i)
		if err := deploy(s.URL(), name, lam, map[string]any{"runtime": "lambda"}); err != nil {
			return err
		}
		t0 := time.Now()
		resp, err := cl.Get(s.URL() + "/fn/" + name)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s answered %d", name, resp.StatusCode)
		}
		cold = append(cold, time.Since(t0))
		resp, err = http.DefaultClient.Do(must(http.NewRequest(http.MethodDelete, s.URL()+"/api/v1/functions/"+name, nil)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("deleting %s: %d", name, resp.StatusCode)
		}
		z, err := zero.sample()
		if err != nil {
			return err
		}
		fromZero = append(fromZero, z)
	}
	paired := func(a, b []time.Duration) time.Duration {
		d := make([]time.Duration, len(a))
		for i := range a {
			d[i] = a[i] - b[i]
		}
		return pctOf(d, .5)
	}
	fmt.Printf("Cold: process start → first response, %d rounds of one sample each, interleaved.\n\n", samples)
	fmt.Println("| start | p50 | p99 |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| bare Go HTTP server (exec + listen + answer) | %s | %s |\n", ms(pctOf(bare, .5)), ms(pctOf(bare, .99)))
	fmt.Printf("| the aws-lambda-go bootstrap, bare (exec + the least Runtime API + one event) | %s | %s |\n", ms(pctOf(bareLam, .5)), ms(pctOf(bareLam, .99)))
	fmt.Printf("| the same bootstrap via Nimbus, first call right after deploy (sandbox + Runtime API + HTTP) | %s | %s |\n", ms(pctOf(cold, .5)), ms(pctOf(cold, .99)))
	fmt.Printf("| the same bootstrap via Nimbus, scale from zero (its spare, held before its first instruction, let go) | %s | %s |\n", ms(pctOf(fromZero, .5)), ms(pctOf(fromZero, .99)))
	fmt.Printf("\n**added by Nimbus at p50**, over the same bootstrap bare: scale from zero %s (median of paired rounds %s); first call after deploy %s (paired %s; %s over the bare Go HTTP server, a smaller binary)\n",
		ms(pctOf(fromZero, .5)-pctOf(bareLam, .5)), ms(paired(fromZero, bareLam)),
		ms(pctOf(cold, .5)-pctOf(bareLam, .5)), ms(paired(cold, bareLam)), ms(pctOf(cold, .5)-pctOf(bare, .5)))
	return nil
}

func bareWait(url string) (time.Duration, error) {
	t0 := time.Now()
	for time.Since(t0) < 10*time.Second {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return time.Since(t0), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("%s did not answer", url)
}
