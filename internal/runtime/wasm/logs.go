package wasm

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// maxLine caps one log line; longer output is split into pieces of this size.
const maxLine = 16 << 10

// tailSize is how much of an invocation's stderr is kept to explain a crash.
const tailSize = 8 << 10

type logEntry struct {
	sink   runtime.LogSink
	id     string
	stream string
	line   []byte
}

// logPump hands log lines to their sinks on one goroutine, so that a slow sink
// never blocks a guest. When its queue is full, lines are dropped and counted.
type logPump struct {
	ch      chan logEntry
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Int64
	once    sync.Once
}

func newLogPump(size int) *logPump {
	p := &logPump{ch: make(chan logEntry, size), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *logPump) run() {
	defer close(p.done)
	for {
		select {
		case e := <-p.ch:
			e.sink.Log(e.id, e.stream, e.line)
		case <-p.stop:
			for {
				select {
				case e := <-p.ch:
					e.sink.Log(e.id, e.stream, e.line)
				default:
					return
				}
			}
		}
	}
}

func (p *logPump) send(e logEntry) {
	select {
	case p.ch <- e:
	default:
		p.dropped.Add(1)
	}
}

// close delivers the lines already queued and stops the pump.
func (p *logPump) close() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

// lineWriter splits one instance stream into lines for the log sink, tagged
// with the invocation running when each line completes. It is used by one
// guest at a time (the goroutine that calls into the instance).
type lineWriter struct {
	pump   *logPump
	sink   runtime.LogSink
	stream string
	id     *string // the instance's current invocation id
	buf    []byte
	// tail keeps the end of this stream since the last reset (stderr only).
	keepTail bool
	tail     []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.keepTail {
		w.appendTail(p)
	}
	if w.sink == nil {
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		var chunk []byte
		if i < 0 {
			chunk, p = p, nil
		} else {
			chunk, p = p[:i], p[i+1:]
		}
		for len(w.buf)+len(chunk) > maxLine {
			k := maxLine - len(w.buf)
			w.buf = append(w.buf, chunk[:k]...)
			chunk = chunk[k:]
			w.emit()
		}
		w.buf = append(w.buf, chunk...)
		if i >= 0 {
			w.emit()
		}
	}
	return n, nil
}

func (w *lineWriter) emit() {
	line := bytes.TrimSuffix(w.buf, []byte{'\r'})
	w.pump.send(logEntry{sink: w.sink, id: *w.id, stream: w.stream, line: bytes.Clone(line)})
	w.buf = w.buf[:0]
}

// flush sends a pending partial line, so that it is attributed to the
// invocation that wrote it.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit()
	}
	if cap(w.buf) > 4*maxLine {
		w.buf = nil
	}
}

func (w *lineWriter) appendTail(p []byte) {
	if len(p) >= tailSize {
		w.tail = append(w.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	if over := len(w.tail) + len(p) - tailSize; over > 0 {
		w.tail = w.tail[:copy(w.tail, w.tail[over:])]
	}
	w.tail = append(w.tail, p...)
}

func (w *lineWriter) resetTail() { w.tail = w.tail[:0] }

// crashMessage picks the most telling lines of a stderr tail: a Go panic or
// fatal error line when there is one, else the last non-empty line.
func crashMessage(tail []byte) string {
	lines := bytes.Split(tail, []byte{'\n'})
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("panic: ")) || bytes.HasPrefix(l, []byte("fatal error: ")) {
			msg := string(bytes.TrimSpace(l))
			// "panic: x [recovered]" / "fatal error: …" may be followed by a
			// runtime line worth keeping ("runtime: out of memory: …").
			if i > 0 && bytes.HasPrefix(lines[i-1], []byte("runtime: ")) {
				msg = string(bytes.TrimSpace(lines[i-1])) + "; " + msg
			}
			return truncate(msg, 512)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); len(l) > 0 {
			return truncate(string(l), 512)
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
