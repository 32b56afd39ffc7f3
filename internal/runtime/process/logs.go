//go:build linux

package process

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// readNonblock reads a non-blocking pipe with a raw system call: it never
// blocks, so it need not hand the scheduler its P (a measurable cost on a busy
// machine, paid twice per invocation by end).
func readNonblock(fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// maxLine bounds one log line; longer output is cut into several lines.
const maxLine = 64 << 10

// tailLines is how many stderr lines are kept for start-failure messages.
const tailLines = 10

// logs reads an instance's stdout and stderr pipes and hands each line to the
// sink, tagged with the invocation in flight when the line is read.
//
// Attribution rule: with no invocation in flight a line carries no id; with
// one, that invocation's id; with several (concurrency > 1), the id of the
// invocation that started most recently. At concurrency 1 it is exact for
// output the process writes before it answers: when an invocation ends, the
// pipes are drained (non-blocking) under the same lock before its id is
// cleared.
type logs struct {
	sink runtime.LogSink

	mu       sync.Mutex
	inflight []string // ids, oldest first
	streams  [2]*stream
	tail     [][]byte // last stderr lines
	wg       sync.WaitGroup
}

type stream struct {
	name    string
	r       *os.File
	rc      syscall.RawConn
	partial []byte
	eof     bool
	buf     []byte
}

// newLogs makes the pipes; the write ends go to the process and are closed
// here by closeWriters once it has started.
func newLogs(sink runtime.LogSink) (l *logs, stdout, stderr *os.File, err error) {
	l = &logs{sink: sink}
	var ws [2]*os.File
	for i, name := range []string{"stdout", "stderr"} {
		r, w, err := os.Pipe()
		if err != nil {
			l.closeReaders()
			for _, w := range ws {
				if w != nil {
					w.Close()
				}
			}
			return nil, nil, nil, err
		}
		rc, err := r.SyscallConn()
		if err != nil {
			r.Close()
			w.Close()
			l.closeReaders()
			return nil, nil, nil, err
		}
		l.streams[i] = &stream{name: name, r: r, rc: rc, buf: make([]byte, 32<<10)}
		ws[i] = w
	}
	return l, ws[0], ws[1], nil
}

func (l *logs) start() {
	for _, s := range l.streams {
		l.wg.Add(1)
		go l.read(s)
	}
}

// read waits for output with the runtime poller and reads it under the lock.
func (l *logs) read(s *stream) {
	defer l.wg.Done()
	rc := s.rc
	for {
		done := false
		err := rc.Read(func(fd uintptr) bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			for l.drainLocked(s, int(fd)) {
			}
			done = s.eof
			return done // false: wait until readable, then call again
		})
		if err != nil || done {
			l.mu.Lock()
			l.flushPartialLocked(s)
			l.mu.Unlock()
			return
		}
	}
}

// drainLocked reads what is in the pipe without blocking. It returns true when
// it should be called again (it read a full buffer) and false when the pipe is
// empty or closed.
func (l *logs) drainLocked(s *stream, fd int) bool {
	if s.eof {
		return false
	}
	for range 64 {
		n, err := readNonblock(fd, s.buf)
		if n > 0 {
			l.linesLocked(s, s.buf[:n])
		}
		switch {
		case n == 0 && err == nil:
			s.eof = true
			return false
		case errors.Is(err, syscall.EAGAIN):
			return false
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			s.eof = true
			return false
		}
		if n < len(s.buf) {
			return false
		}
	}
	return true
}

func (l *logs) linesLocked(s *stream, b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.partial = append(s.partial, b...)
			if len(s.partial) >= maxLine {
				l.emitLocked(s, s.partial)
				s.partial = s.partial[:0]
			}
			return
		}
		line := b[:i]
		if len(s.partial) > 0 {
			line = append(s.partial, line...)
			s.partial = s.partial[:0]
		}
		l.emitLocked(s, bytes.TrimSuffix(line, []byte{'\r'}))
		b = b[i+1:]
	}
}

func (l *logs) flushPartialLocked(s *stream) {
	if len(s.partial) > 0 {
		l.emitLocked(s, s.partial)
		s.partial = s.partial[:0]
	}
}

func (l *logs) emitLocked(s *stream, line []byte) {
	if s.name == "stderr" {
		if len(l.tail) == tailLines {
			copy(l.tail, l.tail[1:])
			l.tail = l.tail[:tailLines-1]
		}
		l.tail = append(l.tail, append([]byte(nil), line[:min(len(line), 512)]...))
	}
	if l.sink == nil {
		return
	}
	id := ""
	if n := len(l.inflight); n > 0 {
		id = l.inflight[n-1]
	}
	l.sink.Log(id, s.name, line)
}

// begin marks an invocation in flight.
func (l *logs) begin(id string) {
	l.mu.Lock()
	l.inflight = append(l.inflight, id)
	l.mu.Unlock()
}

// end drains what the process has written so far (attributing it to id while
// it is still in flight), then marks the invocation done.
func (l *logs) end(id string) {
	l.mu.Lock()
	for _, s := range l.streams {
		s.rc.Control(func(fd uintptr) {
			for l.drainLocked(s, int(fd)) {
			}
		})
		if len(l.inflight) == 1 {
			l.flushPartialLocked(s)
		}
	}
	for i, x := range l.inflight {
		if x == id {
			l.inflight = append(l.inflight[:i], l.inflight[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
}

// stderrTail is the last stderr lines, for error messages.
func (l *logs) stderrTail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(bytes.Join(l.tail, []byte(" | ")))
}

func (l *logs) closeReaders() {
	for _, s := range l.streams {
		if s != nil {
			s.r.Close()
		}
	}
}
