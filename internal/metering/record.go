// Package metering turns invocation records into usage: billed milliseconds,
// GB-seconds and cost, rolled up per tenant, function and hour, and enforces
// per-tenant quotas.
package metering

import "time"

// Record is what every invocation leaves behind. The invoker publishes one per
// invocation, off the hot path, on bus.SubjectInvocations.{tenant}.{function}.
// Fields are only ever added, never renamed: stored records must stay readable.
type Record struct {
	ID       string    `json:"id"`
	Tenant   string    `json:"tenant"`
	Function string    `json:"function"`
	Version  int       `json:"version"`
	Trigger  string    `json:"trigger"` // http, async, schedule, topic, queue, kv, objects, mqtt
	Start    time.Time `json:"start"`
	// DurationNS is wall time inside the instance (excluding queueing and cold start).
	DurationNS int64 `json:"duration_ns"`
	// InitNS is the cold start time when Cold.
	InitNS   int64  `json:"init_ns,omitempty"`
	Cold     bool   `json:"cold"`
	MemoryMB int    `json:"memory_mb"`
	Outcome  string `json:"outcome"` // ok, error, crashed, timeout, out_of_memory, bad_response, start_failed, throttled
	Status   int    `json:"status,omitempty"`
	Node     string `json:"node,omitempty"`
}
