package telemetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func startLogs(t *testing.T, cfg LogsConfig) *Logs {
	t.Helper()
	if cfg.Bus == nil {
		cfg.Bus = openBus(t)
	}
	l := NewLogs(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Start(ctx); err != nil {
		t.Fatalf("start logs: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Stop(ctx); err != nil {
			t.Errorf("stop logs: %v", err)
		}
	})
	return l
}

func waitPublished(t *testing.T, l *Logs, n uint64) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		if s := l.Stats(); s.Published < n {
			return fmt.Errorf("published %d of %d (stats %+v)", s.Published, n, s)
		}
		return nil
	})
}

func query(t *testing.T, l *Logs, q LogQuery) []LogLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []LogLine
	if err := l.Query(ctx, q, func(line LogLine) error { out = append(out, line); return nil }); err != nil {
		t.Fatalf("query %+v: %v", q, err)
	}
	return out
}

func texts(lines []LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Line
	}
	return out
}

func TestLogsRoundTripAndFilters(t *testing.T) {
	l := startLogs(t, LogsConfig{})
	l.SetRedactor(func(tenant string, line []byte) []byte {
		return bytes.ReplaceAll(line, []byte("s3cret"), []byte("****"))
	})
	a := l.Sink("acme", "hello", 3)
	other := l.Sink("acme", "other", 1)
	b := l.Sink("beta", "hello", 1)

	buf := []byte("line 0 inv-1")
	a.Log("inv-1", "stdout", buf)
	copy(buf, "XXXX") // the sink must have copied the line
	a.Log("inv-1", "stderr", []byte("line 1 inv-1 password=s3cret"))
	a.Log("inv-2", "stdout", []byte("line 2 inv-2"))
	other.Log("inv-3", "stdout", []byte("other function"))
	b.Log("inv-4", "stdout", []byte("beta tenant"))
	waitPublished(t, l, 5)
	mid := time.Now()
	eventually(t, 5*time.Second, func() error { // ensure later lines have later times
		if !time.Now().After(mid) {
			return errors.New("clock has not moved")
		}
		return nil
	})
	a.Log("inv-5", "stdout", []byte("line 3 inv-5"))
	a.Log("", "stdout", []byte("line 4 outside"))
	waitPublished(t, l, 7)

	got := query(t, l, LogQuery{Tenant: "acme", Function: "hello"})
	want := []string{"line 0 inv-1", "line 1 inv-1 password=****", "line 2 inv-2", "line 3 inv-5", "line 4 outside"}
	if strings.Join(texts(got), "|") != strings.Join(want, "|") {
		t.Fatalf("all lines: got %q, want %q", texts(got), want)
	}
	first := got[0]
	if first.Tenant != "acme" || first.Function != "hello" || first.Version != 3 || first.InvocationID != "inv-1" || first.Stream != "stdout" || first.Time.IsZero() {
		t.Fatalf("first line fields: %+v", first)
	}
	if got[1].Stream != "stderr" {
		t.Fatalf("second line stream = %q, want stderr", got[1].Stream)
	}

	cases := []struct {
		name string
		q    LogQuery
		want []string
	}{
		{"grep", LogQuery{Tenant: "acme", Function: "hello", Grep: "inv-2"}, []string{"line 2 inv-2"}},
		{"invocation", LogQuery{Tenant: "acme", Function: "hello", InvocationID: "inv-1"}, want[:2]},
		{"since", LogQuery{Tenant: "acme", Function: "hello", Since: mid}, want[3:]},
		{"until", LogQuery{Tenant: "acme", Function: "hello", Until: mid}, want[:3]},
		{"tail", LogQuery{Tenant: "acme", Function: "hello", Limit: 2}, want[3:]},
		{"tail larger than all", LogQuery{Tenant: "acme", Function: "hello", Limit: 50}, want},
		{"grep and tail", LogQuery{Tenant: "acme", Function: "hello", Grep: "inv-", Limit: 2}, []string{"line 2 inv-2", "line 3 inv-5"}},
		{"all functions of a tenant", LogQuery{Tenant: "acme", InvocationID: "inv-3"}, []string{"other function"}},
		{"other tenant", LogQuery{Tenant: "beta"}, []string{"beta tenant"}},
		{"unknown function", LogQuery{Tenant: "acme", Function: "nope"}, nil},
		{"since the future", LogQuery{Tenant: "acme", Function: "hello", Since: time.Now().Add(time.Hour)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := texts(query(t, l, c.q))
			if strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestLogsQueryRejectsBadNames(t *testing.T) {
	l := startLogs(t, LogsConfig{})
	for _, q := range []LogQuery{{Tenant: ""}, {Tenant: "acme.*"}, {Tenant: ">"}, {Tenant: "acme", Function: "*"}, {Tenant: "acme", Function: "a.b"}} {
		err := l.Query(context.Background(), q, func(LogLine) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("query %+v: got %v, want an invalid-name error", q, err)
		}
	}
}

func TestLogsFollow(t *testing.T) {
	l := startLogs(t, LogsConfig{})
	s := l.Sink("acme", "hello", 1)
	s.Log("inv-1", "stdout", []byte("before 1"))
	s.Log("inv-1", "stdout", []byte("before 2"))
	waitPublished(t, l, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan LogLine, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- l.Query(ctx, LogQuery{Tenant: "acme", Function: "hello", Follow: true, Limit: 1, Grep: "e"},
			func(line LogLine) error { lines <- line; return nil })
	}()
	next := func() string {
		t.Helper()
		select {
		case line := <-lines:
			return line.Line
		case err := <-errc:
			t.Fatalf("follow ended early: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("no line within 20s")
		}
		return ""
	}
	if got := next(); got != "before 2" {
		t.Fatalf("tail line = %q, want %q", got, "before 2")
	}
	s.Log("inv-2", "stdout", []byte("live one"))
	s.Log("inv-2", "stdout", []byte("xxxx")) // filtered by grep
	s.Log("inv-2", "stdout", []byte("live two"))
	if got := next(); got != "live one" {
		t.Fatalf("live line = %q", got)
	}
	if got := next(); got != "live two" {
		t.Fatalf("live line = %q", got)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("follow returned %v after cancel, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("follow did not end after cancel")
	}
}

func TestLogsEmitErrorStopsQuery(t *testing.T) {
	l := startLogs(t, LogsConfig{})
	s := l.Sink("acme", "hello", 1)
	for i := range 5 {
		s.Log("", "stdout", fmt.Appendf(nil, "line %d", i))
	}
	waitPublished(t, l, 5)
	stop := errors.New("client went away")
	n := 0
	err := l.Query(context.Background(), LogQuery{Tenant: "acme", Follow: true}, func(LogLine) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("got err %v after %d lines, want the emit error after 2", err, n)
	}
}

func TestLogsFullBufferDropsAndCounts(t *testing.T) {
	b := openBus(t)
	l := NewLogs(LogsConfig{Bus: b, Buffer: 4, MaxLineBytes: 8})
	s := l.Sink("acme", "noisy", 1)
	// Not started: nothing drains the buffer, so all but 4 lines must drop
	// without blocking the caller.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			s.Log("inv", "stdout", fmt.Appendf(nil, "line %04d and more", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Log blocked on a full buffer")
	}
	if st := l.Stats(); st.Dropped != 996 {
		t.Fatalf("dropped = %d, want 996", st.Dropped)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Stop(ctx) }()
	waitPublished(t, l, 5) // 4 buffered lines and the drop notice
	got := query(t, l, LogQuery{Tenant: "acme", Function: "noisy"})
	var notice bool
	var kept []string
	for _, line := range got {
		if line.Stream == StreamNimbus {
			notice = strings.Contains(line.Line, "996 log lines dropped")
			continue
		}
		kept = append(kept, line.Line)
	}
	if !notice {
		t.Fatalf("no drop notice in %q", texts(got))
	}
	want := []string{"line 000…", "line 000…", "line 000…", "line 000…"}
	if strings.Join(kept, "|") != strings.Join(want, "|") {
		t.Fatalf("kept lines %q, want the first 4 cut to 8 bytes %q", kept, want)
	}
}

func TestLogsStopFlushes(t *testing.T) {
	b := openBus(t)
	l := NewLogs(LogsConfig{Bus: b})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := l.Sink("acme", "hello", 1)
	for i := range 500 {
		s.Log("", "stdout", fmt.Appendf(nil, "line %d", i))
	}
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Published != 500 || st.Dropped != 0 || st.Failed != 0 {
		t.Fatalf("after stop: %+v, want all 500 published", st)
	}
	if got := query(t, l, LogQuery{Tenant: "acme", Function: "hello"}); len(got) != 500 || got[499].Line != "line 499" {
		t.Fatalf("stored %d lines", len(got))
	}
}

func TestLogsForgetDropsCachedSinks(t *testing.T) {
	l := NewLogs(LogsConfig{})
	a := l.Sink("acme", "hello", 1)
	if l.Sink("acme", "hello", 1) != a {
		t.Fatal("sinks are not cached")
	}
	other := l.Sink("acme", "other", 1)
	l.Forget("acme", "hello")
	if l.Sink("acme", "hello", 1) == a || l.Sink("acme", "other", 1) != other {
		t.Fatal("Forget dropped the wrong sinks")
	}
}
