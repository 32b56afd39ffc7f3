// Package async owns asynchronous invocation: the durable work queue of
// invocations (JetStream stream NIMBUS_ASYNC), the workers that run them with
// retries, exponential backoff and a maximum age, the dead-letter stream
// (NIMBUS_DLQ), the status and result of each invocation by id, and the
// on_success / on_failure destinations.
//
// # What 202 Accepted promises
//
// Enqueue returns (and the HTTP handler answers 202) only after JetStream has
// acknowledged the message: it is in the stream's file store. The file store
// writes every message to the operating system before it acknowledges, and
// fsyncs on an interval (JetStream's sync_interval, 2 minutes by default). So
// an accepted invocation survives a crash of the Nimbus process (kill -9; tested
// by TestKill9LosesNothing with 1,000 accepted invocations), and survives the
// loss of one node of three in a replicated cluster. It does not survive the
// power loss of a single node within the sync interval unless the bus runs with
// sync_interval "always" (≈0.9 ms per write instead of ≈25 µs).
//
// # Delivery
//
// Delivery is at least once. Each function has one durable pull consumer on
// nimbus.async.{tenant}.{function}; every node pulls from it, running at most N
// invocations of the function at once per node, where N is scale.max ×
// concurrency of the live version (Config.DefaultConcurrency when scale.max is
// not set), so a flood queues in the stream instead of overloading the pool.
//
// An attempt fails when the invoker returns an error (the function crashed,
// timed out, ran out of memory, answered outside its contract, reported an
// error, or was throttled) or when the function answered with a status ≥ 500.
// Any other answer the function wrote — including a 4xx — is a success whose
// status is recorded, as with Lambda's asynchronous invocation. A failed
// attempt is retried after BackoffBase × 2^(attempt-1) until retries+1 attempts
// were made (retries defaults to 2). An event older than max_age (default 6 h)
// when it is delivered is not run. After the last failure, or on max_age, the
// event is published to the dead-letter stream with its error and attempt
// count first, and only then terminated on the work queue, so that a crash
// between the two duplicates the dead letter rather than losing the event.
// A function that no longer exists fails at once, without retries.
//
// # Idempotency
//
// An Idempotency-Key header (at most 256 bytes) becomes the message's
// Nats-Msg-Id, scoped to the tenant and function: within Config.DuplicateWindow
// (5 minutes by default) the same key is accepted again with the same
// invocation id but runs once.
//
// # The event a function sees
//
// For POST /async/{name}/path the function receives the original method, path,
// query, headers and body, plus the headers X-Nimbus-Invocation-Id,
// X-Nimbus-Trigger: async and X-Nimbus-Attempt: N (1 for the first attempt).
//
// For trigger events (schedule, topic, queue, mqtt, kv, objects) and
// destinations, the request is POST / with Raw set and the body is one JSON
// Envelope:
//
//	{
//	  "kind":    "schedule|topic|queue|mqtt|kv|objects|destination",
//	  "id":      "event id (the CloudEvent id, the tick id, the queue batch id …)",
//	  "time":    "RFC 3339 time the event happened",
//	  "attempt": 1,
//	  "source":  "where it came from (topic source, queue name, trigger name, bucket)",
//	  "subject": "what it is about (MQTT topic, key, CloudEvent subject)",
//	  "type":    "event type (CloudEvent type, kv.put, object.created, …)",
//	  "datacontenttype": "media type of data, when known",
//	  "extensions": {"name": "value"},   // CloudEvent extension attributes
//	  "data":    <payload: JSON as is; other text as a JSON string>,
//	  "data_base64": "payload that is not UTF-8 text, base64"
//	}
//
// The same headers (X-Nimbus-Invocation-Id, X-Nimbus-Trigger: kind,
// X-Nimbus-Attempt) are set for events too.
//
// # Destinations
//
// on_success / on_failure of the version's async config, and a per-request
// X-Callback-Url header, receive a Result: "function:NAME" enqueues an async
// invocation of NAME with an Envelope of kind "destination" whose data is the
// Result; "topic:NAME" publishes the Result to the topic; an http(s) URL is
// POSTed the Result body (status, headers X-Nimbus-Invocation-Id,
// X-Nimbus-Status) by a small pool of callback senders, up to 3 tries, never
// holding an invocation worker. Callbacks never reach loopback, link-local
// or unspecified addresses (checked on the URL at request time, 400, and again
// by the dialer, so names and redirects do not get around it) unless the
// server runs with --callback-loopback (nimbus dev does).
package async
