// Package triggers owns the event sources that turn events into invocations:
// schedules (cron), topics (CloudEvents), queues (batches with per-item
// failures), custom HTTP routes and webhooks, MQTT topic filters, and kv /
// object change events. Trigger definitions, declared topics and declared
// queues live in the KV bucket nimbus_triggers; every node watches it and
// runs the triggers' workers. Events reach functions through the async queue
// (internal/async) as an async.Envelope, except HTTP routes (synchronous) and
// queue batches (invoked directly, so that per-item failures can be retried
// item by item).
//
// # Keys in nimbus_triggers
//
//	{tenant}.{function}.{trigger}      a Trigger (JSON)
//	{tenant}._topic.{name}             a declared topic
//	{tenant}._queue.{name}             a declared queue
//	{tenant}._tick.{function}.{trigger} the last tick a schedule fired (missed: once)
//
// # Schedules
//
// A schedule is a robfig/cron expression: 5 fields (minute precision), 6
// fields (with seconds first), a descriptor (@hourly, @daily …) or
// "@every 30s". "@every" intervals are aligned on multiples of the interval,
// so every node computes the same ticks. The time zone comes from the
// timezone field (IANA name) or a CRON_TZ= prefix; the default is UTC.
// Every node publishes each tick to the async queue with the message id
// {tenant}.{function}.{trigger}.{tick unix seconds}; JetStream's
// de-duplication (async.Config.DuplicateWindow, 5 minutes) keeps exactly one
// per tick, whatever the number of nodes, and a restart never fires a tick
// again. Missed ticks (no node running at the time) follow the trigger's
// missed policy: "skip" (the default) fires none; "once" fires the latest
// missed tick once when a node starts the trigger, then resumes the schedule.
//
// # Topics
//
// POST /events/{topic} takes a CloudEvent 1.0 in HTTP binary mode (ce-id,
// ce-source, ce-type, ce-specversion headers; the body is the data) or
// structured mode (Content-Type: application/cloudevents+json). The event is
// stored on NIMBUS_EVENTS with its attributes as ce-* NATS headers and its
// data as the body (the NATS protocol binding); source+id de-duplicates. Each
// topic trigger has a durable consumer that filters on type (any of types),
// source (exact) and subject (prefix), and turns each matching event into one
// async invocation of kind "topic".
//
// # Queues
//
// POST /api/v1/queues/{name}/messages takes one JSON value or a JSON array of
// them. A queue trigger (one per queue) fetches up to batch messages, waiting
// at most window for the batch to fill, and invokes the function once with
// an envelope of kind "queue" whose data is [{"id","attempt","data"}…]. The
// function may answer {"batchItemFailures":[{"itemIdentifier":"id"}]}: only
// those items are retried, with the function's async retries, backoff,
// max_age and dead letters. A failed invocation (error or status ≥ 500)
// fails every item of the batch.
//
// # HTTP routes and webhooks
//
// An http trigger mounts method + path (a Go 1.22 ServeMux pattern such as
// GET /api/products/{id}) on the custom-route handler; path parameters reach
// the function as X-Nimbus-Param-{name} headers and in the path. A webhook
// trigger checks an HMAC-SHA256 (or SHA1) of the raw body against a header
// (hex, with or without a "sha256=" prefix, GitHub style); a missing or
// wrong signature gets 401 and the function does not run.
//
// # MQTT
//
// An mqtt trigger's topic filter (sensors/+/temp) maps to a NATS subject
// (sensors.*.temp) on the NATS server's own MQTT listener; each message
// becomes an async invocation of kind "mqtt" with subject = the MQTT topic
// and data = the payload. Filters must begin with a literal level that is not
// reserved ("nimbus", "$…", "_INBOX"), so that no trigger can listen to
// Nimbus's own subjects.
//
// # kv and objects
//
// Change events published on nimbus.change.{tenant}.kv.{bucket} and
// nimbus.change.{tenant}.objects.{bucket} (stream NIMBUS_CHANGES) are matched
// on key prefix, suffix and event type and delivered at least once as async
// invocations of kind "kv" or "objects".
package triggers
