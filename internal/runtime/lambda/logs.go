package lambda

import (
	"bytes"
	"sync"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// maxLine is the longest log line kept whole; longer output is split.
const maxLine = 16 << 10

// tailSize is how much of stderr an instance keeps for error messages.
const tailSize = 2 << 10

// lineWriter turns a process's output stream into log lines tagged with the
// invocation that is running, and keeps the stream's tail.
type lineWriter struct {
	stream string
	sink   runtime.LogSink
	tag    func() string

	mu   sync.Mutex
	buf  []byte
	tail []byte
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.keepTail(p)
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			lw.buf = append(lw.buf, p...)
			for len(lw.buf) >= maxLine {
				lw.emit(lw.buf[:maxLine])
				lw.buf = append(lw.buf[:0], lw.buf[maxLine:]...)
			}
			break
		}
		if len(lw.buf) > 0 {
			lw.buf = append(lw.buf, p[:i]...)
			lw.emit(lw.buf)
			lw.buf = lw.buf[:0]
		} else {
			lw.emit(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

// flush emits a last unterminated line.
func (lw *lineWriter) flush() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) > 0 {
		lw.emit(lw.buf)
		lw.buf = lw.buf[:0]
	}
}

func (lw *lineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if lw.sink == nil {
		return
	}
	// The sink may keep the slice: give it its own copy.
	lw.sink.Log(lw.tag(), lw.stream, bytes.Clone(line))
}

func (lw *lineWriter) keepTail(p []byte) {
	if len(p) >= tailSize {
		lw.tail = append(lw.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	if over := len(lw.tail) + len(p) - tailSize; over > 0 {
		lw.tail = append(lw.tail[:0], lw.tail[over:]...)
	}
	lw.tail = append(lw.tail, p...)
}

// lastOutput returns the end of the stream, trimmed, for error messages.
func (lw *lineWriter) lastOutput() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return string(bytes.TrimSpace(lw.tail))
}
