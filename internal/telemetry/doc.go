// Package telemetry owns what Nimbus tells its users and operators about what
// ran: function log lines (captured, stored on the bus, queried and followed),
// Prometheus metrics, W3C trace context with OTLP export, and slog setup.
//
// Everything the invoker calls per invocation (LogSink.Log, Metrics.Observe,
// StartSpan without an exporter) is non-blocking and does no bus I/O inline:
// work leaves through bounded buffers drained by background goroutines.
package telemetry
