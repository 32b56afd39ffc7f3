package telemetry

import (
	"io"
	"log/slog"
	"strings"
)

// NewLogger builds the server's logger: text or JSON lines on w at level
// ("debug", "info", "warn" or "error"; anything else is info).
func NewLogger(w io.Writer, level string, json bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: ParseLevel(level)}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ParseLevel reads a level name; unknown names are info.
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
