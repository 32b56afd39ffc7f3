package invoke

import (
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/scaler"
)

// Defaults and bounds of a version's configuration.
const (
	DefaultMemoryMB = 128
	MaxMemoryMB     = 10240
	DefaultTimeout  = 30 * time.Second
	MaxTimeout      = 15 * time.Minute
)

// MemoryMB is v's memory cap with the default applied.
func MemoryMB(v *registry.Version) int {
	if v.Config.MemoryMB <= 0 {
		return DefaultMemoryMB
	}
	return v.Config.MemoryMB
}

// Timeout is v's timeout with the default applied.
func Timeout(v *registry.Version) time.Duration {
	d := v.Config.Timeout.D()
	if d <= 0 {
		return DefaultTimeout
	}
	return d
}

// IsWasm reports whether a runtime runs wasm modules.
func IsWasm(rt string) bool { return rt == runtime.Wasm || rt == runtime.WasmCGI }

// ScaleConfig is v's pool configuration. Wasm instances take one request at a
// time and idle out after 60 s; process instances after 5 minutes.
func ScaleConfig(v *registry.Version) scaler.Config {
	c := scaler.Config{
		Concurrency: v.Config.Concurrency, Min: v.Config.Scale.Min, Max: v.Config.Scale.Max,
		Idle: v.Config.Scale.Idle.D(), QueueMax: v.Config.Queue.Max, QueueTimeout: v.Config.Queue.Timeout.D(),
		MaxRequests: v.Config.MaxRequests,
	}
	switch v.Config.Runtime {
	case runtime.Wasm, runtime.WasmCGI, runtime.Lambda, runtime.Python3, runtime.NodeJS:
		c.Concurrency = 1
	}
	// Wasm instances start in well under a millisecond from a snapshot: the
	// request that needs one starts it itself.
	c.InlineStart = IsWasm(v.Config.Runtime)
	if c.Idle <= 0 {
		if IsWasm(v.Config.Runtime) {
			c.Idle = 60 * time.Second
		} else {
			c.Idle = 5 * time.Minute
		}
	}
	return c.Defaults()
}

// Validate checks a configuration and says what to fix.
func Validate(c *registry.Config) error {
	switch c.Runtime {
	case runtime.Wasm, runtime.WasmCGI, runtime.Process, runtime.Lambda, runtime.Python3, runtime.NodeJS:
	default:
		return &ConfigError{Field: "runtime", Msg: "unknown runtime " + quote(c.Runtime) + "; use one of wasm, wasm-cgi, process, lambda, python3, nodejs"}
	}
	if c.MemoryMB < 0 || c.MemoryMB > MaxMemoryMB {
		return &ConfigError{Field: "memory_mb", Msg: "memory must be between 1 and 10240 MB"}
	}
	if c.Timeout.D() < 0 || c.Timeout.D() > MaxTimeout {
		return &ConfigError{Field: "timeout", Msg: "timeout must be between 1ms and 15m"}
	}
	if c.Concurrency < 0 || c.Concurrency > 1000 {
		return &ConfigError{Field: "concurrency", Msg: "concurrency must be between 1 and 1000"}
	}
	if c.Scale.Min < 0 || c.Scale.Max < 0 || (c.Scale.Max > 0 && c.Scale.Min > c.Scale.Max) {
		return &ConfigError{Field: "scale", Msg: "scale.min and scale.max must be ≥ 0 with min ≤ max"}
	}
	if c.Queue.Max < 0 || c.Queue.Timeout.D() < 0 {
		return &ConfigError{Field: "queue", Msg: "queue.max and queue.timeout must be ≥ 0"}
	}
	switch c.Auth {
	case "", "public", "key", "user":
	default:
		return &ConfigError{Field: "auth", Msg: "auth must be public, key or user"}
	}
	for k := range c.Env {
		if k == "" || containsAny(k, "=\x00") {
			return &ConfigError{Field: "env", Msg: "environment variable name " + quote(k) + " is invalid"}
		}
	}
	return nil
}

// ConfigError is an invalid configuration field.
type ConfigError struct{ Field, Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func quote(s string) string { return "\"" + s + "\"" }

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}
