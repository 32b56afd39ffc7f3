package scaler

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// fakeInstance is an instance that serves nothing; closed counts Close calls.
type fakeInstance struct{ closed atomic.Int32 }

func (f *fakeInstance) Invoke(context.Context, *runtime.Request, http.ResponseWriter) error {
	return nil
}
func (f *fakeInstance) Close() error { f.closed.Add(1); return nil }

// starter counts starts and lets a test hold them until released.
type starter struct {
	started atomic.Int32
	gate    chan struct{} // starts wait for it to close; nil: no wait
	fail    atomic.Bool
	mu      sync.Mutex
	made    []*fakeInstance
}

func (s *starter) start(ctx context.Context) (runtime.Instance, error) {
	s.started.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.fail.Load() {
		return nil, errors.New("start failed")
	}
	in := &fakeInstance{}
	s.mu.Lock()
	s.made = append(s.made, in)
	s.mu.Unlock()
	return in, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestInlineStartServesTheRequester(t *testing.T) {
	for _, inline := range []bool{false, true} {
		s := &starter{}
		p := NewPool(Config{InlineStart: inline}, s.start, nil)
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !l.Cold || l.Instance == nil {
			t.Fatalf("inline=%v: lease %+v, want a cold start", inline, l)
		}
		if st := p.Stats(); st.Busy != 1 || st.Starting != 0 || st.ColdStarts != 1 || st.InFlight != 1 {
			t.Fatalf("inline=%v: stats while leased %+v", inline, st)
		}
		p.Release(l, nil)
		// Warm now: no second start.
		l, err = p.Acquire(context.Background())
		if err != nil || l.Cold {
			t.Fatalf("inline=%v: second acquire %+v %v", inline, l, err)
		}
		p.Release(l, nil)
		if n := s.started.Load(); n != 1 {
			t.Fatalf("inline=%v: %d starts, want 1", inline, n)
		}
		p.Close()
	}
}

// A start that fails because the pool closed meanwhile (the version was
// deleted and its template closed under the start) is ErrClosed, which
// sends the request back to the registry, not the function's failure.
func TestInlineStartFailingAfterCloseIsErrClosed(t *testing.T) {
	s := &starter{gate: make(chan struct{})}
	s.fail.Store(true)
	p := NewPool(Config{InlineStart: true}, s.start, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Acquire(context.Background())
		errc <- err
	}()
	waitFor(t, "the start", func() bool { return s.started.Load() == 1 })
	p.Close()
	close(s.gate)
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire = %v, want ErrClosed", err)
	}
	if st := p.Stats(); st.InFlight != 0 || st.Starting != 0 {
		t.Fatalf("stats after the failed start: %+v", st)
	}
}

// A burst from zero starts no more instances than requests need, and never
// more than Max, whether requests start instances themselves or not.
func TestInlineStartBurstStartsOnlyWhatIsNeeded(t *testing.T) {
	for _, tc := range []struct {
		concurrency, max, requests, wantStarts int
	}{
		{1, 4, 20, 4},
		{4, 10, 8, 2},
		{3, 10, 7, 3},
	} {
		s := &starter{gate: make(chan struct{})}
		p := NewPool(Config{InlineStart: true, Concurrency: tc.concurrency, Max: tc.max}, s.start, nil)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		served, overfull := 0, false
		perInstance := map[runtime.Instance]int{}
		for range tc.requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := p.Acquire(context.Background())
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				served++
				perInstance[l.Instance]++
				overfull = overfull || perInstance[l.Instance] > tc.concurrency
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				perInstance[l.Instance]--
				mu.Unlock()
				p.Release(l, nil)
			}()
		}
		waitFor(t, "every request to wait or start", func() bool {
			st := p.Stats()
			return st.InFlight == tc.requests && int(s.started.Load()) == tc.wantStarts
		})
		close(s.gate)
		wg.Wait()
		if len(errs) > 0 || served != tc.requests {
			t.Fatalf("%+v: served %d, errors %v", tc, served, errs)
		}
		if n := int(s.started.Load()); n != tc.wantStarts {
			t.Fatalf("%+v: %d starts, want %d", tc, n, tc.wantStarts)
		}
		if overfull {
			t.Fatalf("%+v: an instance took more than its concurrency", tc)
		}
		p.Close()
	}
}

// With Max instances starting, further requests queue and are served by
// those instances as they free up.
func TestInlineStartQueuesBeyondMax(t *testing.T) {
	s := &starter{gate: make(chan struct{})}
	p := NewPool(Config{InlineStart: true, Max: 1}, s.start, nil)
	first := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		first <- l
	}()
	waitFor(t, "the first start", func() bool { return s.started.Load() == 1 })
	second := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		second <- l
	}()
	waitFor(t, "the second request to queue", func() bool { return p.Stats().Queued == 1 })
	close(s.gate)
	l1 := <-first
	if !l1.Cold {
		t.Fatal("first lease is not a cold start")
	}
	p.Release(l1, nil)
	l2 := <-second
	if l2.Instance != l1.Instance || l2.Cold {
		t.Fatalf("second lease %+v, want the first instance, warm", l2)
	}
	p.Release(l2, nil)
	if n := s.started.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
	p.Close()
}

func TestInlineStartFailure(t *testing.T) {
	s := &starter{}
	s.fail.Store(true)
	p := NewPool(Config{InlineStart: true}, s.start, nil)
	if _, err := p.Acquire(context.Background()); err == nil || err.Error() != "start failed" {
		t.Fatalf("err = %v, want the start's error", err)
	}
	if st := p.Stats(); st.StartErrors != 1 || st.InFlight != 0 || st.Starting != 0 {
		t.Fatalf("stats after a failed start: %+v", st)
	}
	// A later request tries again.
	s.fail.Store(false)
	l, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Release(l, nil)
	p.Close()
}

// A request whose own start fails while another instance runs waits for that
// instance instead of failing.
func TestInlineStartFailureWaitsForAnotherInstance(t *testing.T) {
	s := &starter{}
	p := NewPool(Config{InlineStart: true, Max: 2}, s.start, nil)
	busy, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.fail.Store(true)
	got := make(chan *Lease)
	go func() {
		l, err := p.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the failed start and the wait", func() bool { return p.Stats().StartErrors == 1 && p.Stats().Queued == 1 })
	p.Release(busy, nil)
	l := <-got
	if l.Instance != busy.Instance {
		t.Fatalf("got %+v, want the running instance", l)
	}
	p.Release(l, nil)
	p.Close()
}

// A pool closed while a request starts an instance closes that instance and
// fails the request with ErrClosed.
func TestInlineStartOnClosedPool(t *testing.T) {
	s := &starter{gate: make(chan struct{})}
	p := NewPool(Config{InlineStart: true}, s.start, nil)
	res := make(chan error)
	go func() {
		_, err := p.Acquire(context.Background())
		res <- err
	}()
	waitFor(t, "the start", func() bool { return s.started.Load() == 1 })
	p.Close()
	close(s.gate)
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.made) != 1 || s.made[0].closed.Load() != 1 {
		t.Fatalf("the instance started for a closed pool was not closed")
	}
}

// A request that goes away while starting an instance leaves it to the
// pool: the next request uses it without a start.
func TestInlineStartCanceledRequestKeepsTheInstance(t *testing.T) {
	s := &starter{gate: make(chan struct{})}
	p := NewPool(Config{InlineStart: true}, s.start, nil)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error)
	go func() {
		_, err := p.Acquire(ctx)
		res <- err
	}()
	waitFor(t, "the start", func() bool { return s.started.Load() == 1 })
	cancel()
	close(s.gate)
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st := p.Stats(); st.Idle != 1 || st.InFlight != 0 {
		t.Fatalf("stats %+v, want one idle instance", st)
	}
	l, err := p.Acquire(context.Background())
	if err != nil || l.Cold {
		t.Fatalf("lease %+v %v, want the started instance, warm", l, err)
	}
	p.Release(l, nil)
	if n := s.started.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
	p.Close()
}
