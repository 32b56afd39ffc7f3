package hostapi

import (
	"encoding/json"
	"strings"
	"time"
)

// LogStream is the stream name structured host-API log entries carry in the
// function's log (beside "stdout" and "stderr").
const LogStream = "log"

// MaxLogBytes caps one structured log entry; longer messages are cut.
const MaxLogBytes = 16 << 10

// Log writes a structured entry to the function's log stream: one JSON
// object {"time","level","msg", fields…} on stream "log", tagged with the
// invocation. level is debug, info, warn or error (anything else is BadInput).
func (h *Host) Log(invocationID, level, msg string, fields map[string]string) error {
	const op = "log_write"
	level = strings.ToLower(level)
	switch level {
	case "debug", "info", "warn", "error":
	case "warning":
		level = "warn"
	case "":
		level = "info"
	default:
		return errorf(BadInput, op, "log level %q is not one of debug, info, warn, error", level)
	}
	if h.logs == nil {
		return errorf(Unavailable, op, "the function log is not configured on this server")
	}
	if len(msg) > MaxLogBytes {
		msg = msg[:MaxLogBytes]
	}
	entry := make(map[string]any, len(fields)+3)
	for k, v := range fields {
		entry[k] = v
	}
	entry["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	entry["level"] = level
	entry["msg"] = msg
	line, err := json.Marshal(entry)
	if err != nil {
		return &Error{Kind: BadInput, Op: op, Message: "log fields cannot be encoded", Err: err}
	}
	if len(line) > 4*MaxLogBytes {
		return errorf(TooLarge, op, "log entry is %d bytes; the limit is %d", len(line), 4*MaxLogBytes)
	}
	h.logs.Log(invocationID, LogStream, line)
	return nil
}

// Report writes the message of a failed host call to the function's stderr
// log, so that its author learns why a call returned an error code.
func (h *Host) Report(invocationID string, err error) {
	if h.logs == nil || err == nil {
		return
	}
	h.logs.Log(invocationID, "stderr", []byte("nimbus host API: "+err.Error()))
}
