//go:build linux

package sandbox

import (
	goruntime "runtime"
	"sync"
	"testing"
	"time"
)

// An instance must outlive whatever thread the server happened to be on
// when it started it. Go ends a thread when a goroutine exits locked to it
// (as the private file system's namespace work does), and the kernel then
// sends the parent-death signal to the children that thread forked: a fork
// from an ordinary thread got its instance SIGKILLed by an unrelated start.
func TestInstancesOutliveEndedThreads(t *testing.T) {
	dir := codeDir(t, "exec sleep 60\n")
	var ps []*Process
	for range 4 {
		ps = append(ps, start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}}))
	}
	// End many threads, as privateFS does: each goroutine exits locked. Go
	// hands idle threads to new goroutines, so the threads that did the
	// starts above are among them unless starts keep to threads of their own.
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				goruntime.LockOSThread()
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
	}
	for i, p := range ps {
		select {
		case <-p.Done():
			t.Fatalf("instance %d ended while nothing stopped it: %v", i, p.ExitErr())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
