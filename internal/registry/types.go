package registry

import (
	"encoding/json"
	"fmt"
	"time"
)

// DefaultTenant owns everything on a fresh install.
const DefaultTenant = "default"

// LiveAlias is the alias that follows the newest version unless pinned.
const LiveAlias = "live"

// ValidName reports whether s is a valid name for a function, alias, tenant,
// topic, queue or bucket-like resource: ^[a-z][a-z0-9-]{0,62}$. It runs on
// every invocation, so it is a loop rather than a regular expression.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// CheckName returns an error that says what is wrong with name, or nil.
func CheckName(kind, name string) error {
	if ValidName(name) {
		return nil
	}
	return fmt.Errorf("%s name %q is invalid: use 1-63 characters, lower-case letters, digits and '-', starting with a letter", kind, name)
}

// Function is a named unit of code and its history, owned by a tenant.
type Function struct {
	Tenant  string           `json:"tenant"`
	Name    string           `json:"name"`
	Created time.Time        `json:"created"`
	Updated time.Time        `json:"updated"`
	Latest  int              `json:"latest"` // newest version number
	Aliases map[string]Alias `json:"aliases"`
}

// Alias is a movable name for a version. Version 0 follows the newest version
// (the default for "live"). With Weight > 0, that share of traffic (0..1) goes to
// Additional instead.
type Alias struct {
	Version    int     `json:"version"`
	Additional int     `json:"additional_version,omitempty"`
	Weight     float64 `json:"weight,omitempty"`
}

// Version is an immutable snapshot of a function's code and configuration.
type Version struct {
	Tenant   string    `json:"tenant"`
	Function string    `json:"function"`
	Number   int       `json:"version"`
	Created  time.Time `json:"created"`
	// Digest is "sha256:<hex>" of the artifact in the object store.
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Config Config `json:"config"`
}

// Config is everything about a version that is not its code. Zero values mean
// the documented default (see Defaults).
type Config struct {
	Runtime  string            `json:"runtime"`
	MemoryMB int               `json:"memory_mb,omitempty"`
	Timeout  Duration          `json:"timeout,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	// Entry is the command that starts a process bundle.
	Entry string `json:"entry,omitempty"`
	// Handler names the handler of a managed runtime ("handler.handler").
	Handler string `json:"handler,omitempty"`
	// Auth is who may call the function over HTTP: "public", "key" or "user".
	Auth        string   `json:"auth,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
	Scale       Scale    `json:"scale,omitempty"`
	Queue       Queue    `json:"queue,omitempty"`
	MaxRequests int      `json:"max_requests,omitempty"`
	Snapshot    *bool    `json:"snapshot,omitempty"`
	Async       Async    `json:"async,omitempty"`
	Secrets     []string `json:"secrets,omitempty"`
	// AllowedHosts limits outbound HTTP through the host API.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
}

// Scale bounds a version's instance pool on each node.
type Scale struct {
	Min  int      `json:"min,omitempty"`
	Max  int      `json:"max,omitempty"`
	Idle Duration `json:"idle,omitempty"`
}

// Queue bounds how many requests wait for an instance, and for how long.
type Queue struct {
	Max     int      `json:"max,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// Async configures asynchronous invocations of a version.
type Async struct {
	Retries   *int     `json:"retries,omitempty"`
	MaxAge    Duration `json:"max_age,omitempty"`
	ResultTTL Duration `json:"result_ttl,omitempty"`
	OnSuccess string   `json:"on_success,omitempty"`
	OnFailure string   `json:"on_failure,omitempty"`
}

// Duration is a time.Duration that reads and writes as "30s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string like \"30s\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
