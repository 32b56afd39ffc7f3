package telemetry

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	lg := NewLogger(&buf, "warn", true).With("component", "x")
	lg.Info("hidden")
	lg.Warn("shown", "n", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	if rec["msg"] != "shown" || rec["component"] != "x" || rec["level"] != "WARN" {
		t.Fatalf("record %v", rec)
	}
	buf.Reset()
	NewLogger(&buf, "nonsense", false).Debug("no")
	NewLogger(&buf, "DEBUG", false).Debug("yes")
	if strings.Contains(buf.String(), "msg=no") || !strings.Contains(buf.String(), "msg=yes") {
		t.Fatalf("text output %q", buf.String())
	}
}
