package bus

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Names of every stream, bucket and subject prefix. One place, so that two
// packages never invent the same name for different things.
const (
	// BucketRegistry holds functions, versions and aliases (internal/registry).
	BucketRegistry = "nimbus_registry"
	// BucketArtifacts holds function code addressed by SHA-256 (internal/registry).
	BucketArtifacts = "nimbus_artifacts"
	// StreamInvocations carries every invocation's record, batched per message
	// (subjects SubjectInvocations.{tenant}.{function}; internal/metering). It is
	// the durable usage data: usage is derived from it.
	StreamInvocations  = "NIMBUS_INVOCATIONS"
	SubjectInvocations = "nimbus.inv"
	// StreamLogs carries function log lines (subjects SubjectLogs.{tenant}.{function}).
	StreamLogs  = "NIMBUS_LOGS"
	SubjectLogs = "nimbus.logs"
	// StreamAsync is the async invocation work queue (internal/async).
	StreamAsync  = "NIMBUS_ASYNC"
	SubjectAsync = "nimbus.async"
	// StreamDeadLetters keeps events whose retries ran out.
	StreamDeadLetters  = "NIMBUS_DLQ"
	SubjectDeadLetters = "nimbus.dlq"
	// StreamEvents carries topic events (CloudEvents) (internal/triggers).
	StreamEvents  = "NIMBUS_EVENTS"
	SubjectEvents = "nimbus.events"
	// StreamUsage held a copy of each record as usage; nothing writes it any
	// more (usage derives from StreamInvocations). Kept for stored data.
	StreamUsage  = "NIMBUS_USAGE"
	SubjectUsage = "nimbus.usage"
	// BucketTenants holds tenants, API keys and secrets (internal/tenant).
	BucketTenants = "nimbus_tenants"
	// BucketTriggers holds trigger definitions (internal/triggers).
	BucketTriggers = "nimbus_triggers"
	// BucketAuth holds app end users, their email index and per-tenant JWT
	// signing keys (internal/baas/auth). Never exposed to apps.
	BucketAuth = "nimbus_auth"
	// BucketAuthTokens holds refresh-token families and password-reset
	// tokens (internal/baas/auth); entries expire with the bucket's MaxAge.
	BucketAuthTokens = "nimbus_auth_tokens"
	// BucketAsyncResults holds async invocation status and results by id, each
	// with its own TTL (internal/async).
	BucketAsyncResults = "nimbus_async_results"
	// StreamQueues holds messages of named queues (subjects SubjectQueues.{tenant}.{queue}) (internal/triggers).
	StreamQueues  = "NIMBUS_QUEUES"
	SubjectQueues = "nimbus.queue"
	// StreamChanges carries kv and object change events
	// (subjects SubjectChanges.{tenant}.kv.{bucket} and SubjectChanges.{tenant}.objects.{bucket}).
	StreamChanges  = "NIMBUS_CHANGES"
	SubjectChanges = "nimbus.change"
)

// Subject joins subject tokens with dots.
func Subject(tokens ...string) string { return strings.Join(tokens, ".") }

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}

func joinComma(s []string) string { return strings.Join(s, ",") }
