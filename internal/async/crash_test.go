package async

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
)

const crashChildEnv = "NIMBUS_ASYNC_CRASH_CHILD"

// sideEffects appends each invocation id to a file: the function's side effect.
type sideEffects struct {
	mu sync.Mutex
	f  *os.File
}

func (se *sideEffects) invoker() *fnInvoker {
	inv := newInvoker()
	inv.add("sink", registry.Config{Runtime: "process", Scale: registry.Scale{Max: 4}}, func(ctx context.Context, req *runtime.Request, body []byte, w http.ResponseWriter) error {
		time.Sleep(time.Millisecond)
		se.mu.Lock()
		defer se.mu.Unlock()
		_, err := se.f.WriteString(req.InvocationID + "\n")
		return err
	})
	return inv
}

// crashChild runs in a child process: it enqueues 1,000 invocations while
// its workers run them, printing each accepted id, then waits to be killed.
func crashChild(dir string) {
	f, err := os.OpenFile(filepath.Join(dir, "effects"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	se := &sideEffects{f: f}
	b, err := bus.Open(context.Background(), bus.Config{Dir: filepath.Join(dir, "data"), Logger: quietLogger()})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	s := New(Config{Bus: b, Invoker: se.invoker(), Logger: quietLogger(), AckWait: 2 * time.Second, BackoffBase: 50 * time.Millisecond})
	if err := s.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; i < 1000; i++ {
		id, err := s.Enqueue(context.Background(), Target{Tenant: "default", Function: "sink"}, &runtime.Request{Body: strings.NewReader(fmt.Sprint(i))})
		if err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			os.Exit(2)
		}
		fmt.Fprintln(out, "ok", id)
		out.Flush()
	}
	select {} // wait for kill -9
}

func TestKill9LosesNothing(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9LosesNothing$", "-test.v=false")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	accepted := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for len(accepted) < 1000 && sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "ok "); ok {
			accepted[id] = true
		} else if strings.HasPrefix(line, "error") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %s", line)
		}
	}
	// kill -9 right after the 1,000th 202.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(accepted) != 1000 {
		t.Fatalf("child accepted %d invocations before it died", len(accepted))
	}
	before := countEffects(t, dir)
	t.Logf("side effects before the kill: %d distinct", len(before))

	f, err := os.OpenFile(filepath.Join(dir, "effects"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	se := &sideEffects{f: f}
	b := openBus(t, filepath.Join(dir, "data"))
	startService(t, b, se.invoker(), func(c *Config) { c.AckWait = 2 * time.Second })
	var got map[string]int
	eventually(t, 45*time.Second, func() error {
		got = countEffects(t, dir)
		missing := 0
		for id := range accepted {
			if got[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of 1000 accepted invocations have not run", missing)
		}
		return nil
	})
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("after restart: all 1000 accepted invocations ran; %d ran before the kill, %d duplicate runs (at-least-once)", len(before), dups)
}

func countEffects(t *testing.T, dir string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "effects"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out[l]++
		}
	}
	return out
}
