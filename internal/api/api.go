// Package api is the control-plane REST API under /api/v1: deploying functions
// (artifacts, versions, aliases), inspecting and removing them, and reading
// their logs. api/openapi.yaml at the repository root describes it.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/invoke"
	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/runtime"
	"github.com/nimbusfn/nimbus/internal/scaler"
	"github.com/nimbusfn/nimbus/internal/telemetry"
)

// DefaultMaxArtifact is the artifact size limit (100 MB).
const DefaultMaxArtifact = 100 << 20

// Logs is what the API needs from the function log store.
type Logs interface {
	Query(ctx context.Context, q telemetry.LogQuery, emit func(telemetry.LogLine) error) error
}

// Config wires the API.
type Config struct {
	Registry *registry.Registry
	Invoker  *invoke.Invoker
	Logs     Logs
	// Detect names the runtime of code deployed without one (wasm modules).
	Detect func(code []byte) (string, error)
	// TenantOf returns the tenant a request acts for.
	TenantOf func(r *http.Request) string
	// BaseURL is where functions are reachable (for the "url" field).
	BaseURL func(r *http.Request) string
	// Before runs before a deploy is stored (quotas); may be nil.
	Before      func(ctx context.Context, tenant, function string) error
	MaxArtifact int64
	Version     string
	Node        string
	Runtimes    []string
	Logger      *slog.Logger
}

// API serves /api/v1.
type API struct {
	cfg Config
	log *slog.Logger
}

// New builds the API.
func New(cfg Config) *API {
	if cfg.MaxArtifact <= 0 {
		cfg.MaxArtifact = DefaultMaxArtifact
	}
	if cfg.TenantOf == nil {
		cfg.TenantOf = func(*http.Request) string { return registry.DefaultTenant }
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &API{cfg: cfg, log: l.With("component", "api")}
}

// Routes mounts the API on mux.
func (a *API) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/info", a.info)
	mux.HandleFunc("POST /api/v1/artifacts", a.putArtifact)
	mux.HandleFunc("HEAD /api/v1/artifacts/{digest}", a.headArtifact)
	mux.HandleFunc("POST /api/v1/functions", a.deploy)
	mux.HandleFunc("GET /api/v1/functions", a.list)
	mux.HandleFunc("GET /api/v1/functions/{name}", a.get)
	mux.HandleFunc("DELETE /api/v1/functions/{name}", a.remove)
	mux.HandleFunc("GET /api/v1/functions/{name}/versions", a.versions)
	mux.HandleFunc("GET /api/v1/functions/{name}/versions/{n}", a.version)
	mux.HandleFunc("GET /api/v1/functions/{name}/aliases", a.aliases)
	mux.HandleFunc("GET /api/v1/functions/{name}/aliases/{alias}", a.alias)
	mux.HandleFunc("PUT /api/v1/functions/{name}/aliases/{alias}", a.setAlias)
	mux.HandleFunc("DELETE /api/v1/functions/{name}/aliases/{alias}", a.deleteAlias)
	mux.HandleFunc("GET /api/v1/functions/{name}/logs", a.logs)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// regErr maps registry errors onto the catalog.
func regErr(name string, err error) error {
	switch {
	case errors.Is(err, registry.ErrVersionNotFound):
		return apierr.New(apierr.VersionNotFound, "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return apierr.New(apierr.FunctionNotFound, "no function named %q", name)
	case errors.Is(err, registry.ErrConflict):
		return apierr.New(apierr.Conflict, "%v", err)
	}
	return err
}

func (a *API) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"version": a.cfg.Version, "node": a.cfg.Node, "runtimes": a.cfg.Runtimes})
}

func (a *API) putArtifact(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > a.cfg.MaxArtifact {
		apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "artifact is %d bytes, over the %d-byte limit", r.ContentLength, a.cfg.MaxArtifact))
		return
	}
	digest, size, err := a.cfg.Registry.PutArtifact(r.Context(), r.Body, a.cfg.MaxArtifact)
	if err != nil {
		if errors.Is(err, registry.ErrTooLarge) {
			apierr.Write(w, apierr.New(apierr.PayloadTooLarge, "%v", err))
			return
		}
		apierr.Write(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"digest": digest, "size": size})
}

func (a *API) headArtifact(w http.ResponseWriter, r *http.Request) {
	ok, err := a.cfg.Registry.HasArtifact(r.Context(), r.PathValue("digest"))
	switch {
	case err != nil:
		w.WriteHeader(http.StatusBadRequest)
	case ok:
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

type deployRequest struct {
	Name   string          `json:"name"`
	Digest string          `json:"digest"`
	Config registry.Config `json:"config"`
}

func (a *API) deploy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	tenant := a.cfg.TenantOf(r)
	var req deployRequest
	var code []byte
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == "multipart/form-data":
		r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxArtifact+1<<20)
		mr, err := r.MultipartReader()
		if err != nil || params["boundary"] == "" {
			apierr.Write(w, apierr.New(apierr.BadRequest, "multipart body without a boundary: %v", err))
			return
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				apierr.Write(w, bodyErr(err, a.cfg.MaxArtifact))
				return
			}
			switch p.FormName() {
			case "name":
				b, _ := io.ReadAll(io.LimitReader(p, 256))
				req.Name = strings.TrimSpace(string(b))
			case "config":
				if err := strictJSON(io.LimitReader(p, 1<<20), &req.Config); err != nil {
					apierr.Write(w, apierr.New(apierr.InvalidConfig, "config: %v", err))
					return
				}
			case "code":
				digest, _, err := a.cfg.Registry.PutArtifact(ctx, p, a.cfg.MaxArtifact)
				if err != nil {
					apierr.Write(w, bodyErr(err, a.cfg.MaxArtifact))
					return
				}
				req.Digest = digest
			}
		}
	default:
		if err := strictJSON(io.LimitReader(r.Body, 1<<20), &req); err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "deploy body: %v (send JSON {\"name\",\"digest\",\"config\"} or multipart with a code part)", err))
			return
		}
	}
	if err := registry.CheckName("function", req.Name); err != nil {
		apierr.Write(w, apierr.New(apierr.InvalidName, "%v", err))
		return
	}
	if req.Digest == "" {
		apierr.Write(w, apierr.New(apierr.BadRequest, "no code: upload it to /api/v1/artifacts and pass its digest, or send a multipart code part"))
		return
	}
	code, err := a.cfg.Registry.Artifact(ctx, req.Digest)
	if err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "artifact %s is not stored: upload it first to /api/v1/artifacts", req.Digest))
		return
	}
	if req.Config.Runtime == "" {
		if a.cfg.Detect == nil || !bytes.HasPrefix(code, []byte("\x00asm")) {
			apierr.Write(w, apierr.New(apierr.InvalidRuntime, "the code is not a WebAssembly module, so say which runtime runs it: process, lambda, python3 or nodejs"))
			return
		}
		rt, err := a.cfg.Detect(code)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.InvalidCode, "%v", err))
			return
		}
		req.Config.Runtime = rt
	}
	if err := invoke.Validate(&req.Config); err != nil {
		var ce *invoke.ConfigError
		if errors.As(err, &ce) && ce.Field == "runtime" {
			apierr.Write(w, apierr.New(apierr.InvalidRuntime, "%v", err))
			return
		}
		apierr.Write(w, apierr.New(apierr.InvalidConfig, "%v", err))
		return
	}
	if a.cfg.Before != nil {
		if err := a.cfg.Before(ctx, tenant, req.Name); err != nil {
			apierr.Write(w, err)
			return
		}
	}
	probe := &registry.Version{Tenant: tenant, Function: req.Name, Number: a.cfg.Registry.NextVersion(tenant, req.Name), Digest: req.Digest, Size: int64(len(code)), Config: req.Config}
	t0 := time.Now()
	tmpl, err := a.cfg.Invoker.Prepare(ctx, probe, code)
	if err != nil {
		if runtime.KindOf(err) == runtime.BadCode {
			apierr.Write(w, apierr.New(apierr.InvalidCode, "%v", err))
			return
		}
		apierr.Write(w, apierr.New(apierr.InvalidCode, "preparing the code failed: %v", err))
		return
	}
	v, err := a.cfg.Registry.Deploy(ctx, tenant, req.Name, req.Digest, int64(len(code)), req.Config)
	if err != nil {
		_ = tmpl.Close()
		apierr.Write(w, regErr(req.Name, err))
		return
	}
	a.cfg.Invoker.Adopt(v, tmpl)
	a.log.Info("deployed", "tenant", tenant, "function", v.Function, "version", v.Number, "runtime", v.Config.Runtime, "prepare", time.Since(t0).Round(time.Millisecond))
	writeJSON(w, http.StatusCreated, v)
}

func bodyErr(err error, limit int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || errors.Is(err, registry.ErrTooLarge) {
		return apierr.New(apierr.PayloadTooLarge, "artifact is over the %d-byte limit", limit)
	}
	return apierr.New(apierr.BadRequest, "reading the upload: %v", err)
}

func strictJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// FunctionView is a function as the API shows it.
type FunctionView struct {
	Name      string                    `json:"name"`
	Tenant    string                    `json:"tenant"`
	Created   time.Time                 `json:"created"`
	Updated   time.Time                 `json:"updated"`
	Latest    int                       `json:"latest"`
	Aliases   map[string]registry.Alias `json:"aliases"`
	Runtime   string                    `json:"runtime"`
	URL       string                    `json:"url"`
	Config    registry.Config           `json:"config"`
	Digest    string                    `json:"digest"`
	Instances InstanceCounts            `json:"instances"`
	InFlight  int                       `json:"in_flight"`
	Queued    int                       `json:"queued"`
	Pools     map[int]scaler.Stats      `json:"pools,omitempty"`
}

// InstanceCounts sums a function's instances on this node by state.
type InstanceCounts struct {
	Starting int `json:"starting"`
	Idle     int `json:"idle"`
	Busy     int `json:"busy"`
	Desired  int `json:"desired"`
}

func (a *API) view(r *http.Request, f *registry.Function) FunctionView {
	fv := FunctionView{Name: f.Name, Tenant: f.Tenant, Created: f.Created, Updated: f.Updated, Latest: f.Latest, Aliases: f.Aliases}
	if v, err := a.cfg.Registry.Resolve(f.Tenant, f.Name, ""); err == nil {
		fv.Runtime, fv.Config, fv.Digest = v.Config.Runtime, v.Config, v.Digest
	}
	if a.cfg.BaseURL != nil {
		fv.URL = a.cfg.BaseURL(r) + "/fn/" + f.Name
	}
	fv.Pools = a.cfg.Invoker.Stats(f.Tenant, f.Name)
	for _, s := range fv.Pools {
		fv.Instances.Starting += s.Starting
		fv.Instances.Idle += s.Idle
		fv.Instances.Busy += s.Busy
		fv.Instances.Desired += s.Desired
		fv.InFlight += s.InFlight
		fv.Queued += s.Queued
	}
	return fv
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	fns := a.cfg.Registry.Functions(a.cfg.TenantOf(r))
	out := make([]FunctionView, 0, len(fns))
	for _, f := range fns {
		out = append(out, a.view(r, f))
	}
	writeJSON(w, 200, map[string]any{"functions": out})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f, err := a.cfg.Registry.Function(a.cfg.TenantOf(r), name)
	if err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	writeJSON(w, 200, a.view(r, f))
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := a.cfg.Registry.Delete(r.Context(), a.cfg.TenantOf(r), name); err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	vs, err := a.cfg.Registry.Versions(a.cfg.TenantOf(r), name)
	if err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	writeJSON(w, 200, map[string]any{"versions": vs})
}

func (a *API) version(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 {
		apierr.Write(w, apierr.New(apierr.BadRequest, "version %q is not a positive number", r.PathValue("n")))
		return
	}
	v, err := a.cfg.Registry.Resolve(a.cfg.TenantOf(r), name, strconv.Itoa(n))
	if err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	writeJSON(w, 200, v)
}

func (a *API) aliases(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f, err := a.cfg.Registry.Function(a.cfg.TenantOf(r), name)
	if err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	writeJSON(w, 200, map[string]any{"aliases": f.Aliases})
}

func (a *API) alias(w http.ResponseWriter, r *http.Request) {
	name, alias := r.PathValue("name"), r.PathValue("alias")
	f, err := a.cfg.Registry.Function(a.cfg.TenantOf(r), name)
	if err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	al, ok := f.Aliases[alias]
	if !ok {
		apierr.Write(w, apierr.New(apierr.NotFound, "function %q has no alias %q", name, alias))
		return
	}
	writeJSON(w, 200, al)
}

func (a *API) setAlias(w http.ResponseWriter, r *http.Request) {
	name, alias := r.PathValue("name"), r.PathValue("alias")
	var al registry.Alias
	if err := strictJSON(io.LimitReader(r.Body, 1<<16), &al); err != nil {
		apierr.Write(w, apierr.New(apierr.BadRequest, "alias body: %v (send {\"version\":N})", err))
		return
	}
	err := a.cfg.Registry.SetAlias(r.Context(), a.cfg.TenantOf(r), name, alias, al)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrVersionNotFound) {
			apierr.Write(w, regErr(name, err))
			return
		}
		apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
		return
	}
	writeJSON(w, 200, al)
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) {
	name, alias := r.PathValue("name"), r.PathValue("alias")
	// A function the tenant does not have is 404 before any rule about
	// its aliases (the answer must not depend on another tenant's names).
	if _, err := a.cfg.Registry.Function(a.cfg.TenantOf(r), name); err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	err := a.cfg.Registry.DeleteAlias(r.Context(), a.cfg.TenantOf(r), name, alias)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			apierr.Write(w, apierr.New(apierr.NotFound, "%v", err))
			return
		}
		apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) logs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	tenant := a.cfg.TenantOf(r)
	if _, err := a.cfg.Registry.Function(tenant, name); err != nil {
		apierr.Write(w, regErr(name, err))
		return
	}
	qv := r.URL.Query()
	q := telemetry.LogQuery{Tenant: tenant, Function: name, Grep: qv.Get("grep"), InvocationID: qv.Get("invocation")}
	if s := qv.Get("since"); s != "" {
		t, err := parseSince(s)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "since=%q: use a duration like 10m or an RFC 3339 time", s))
			return
		}
		q.Since = t
	}
	if s := qv.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			apierr.Write(w, apierr.New(apierr.BadRequest, "limit=%q is not a number ≥ 0", s))
			return
		}
		q.Limit = n
	}
	q.Follow = qv.Get("follow") == "1" || qv.Get("follow") == "true"
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	err := a.cfg.Logs.Query(r.Context(), q, func(l telemetry.LogLine) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		if q.Follow && fl != nil {
			fl.Flush()
		}
		return nil
	})
	if err != nil && r.Context().Err() == nil {
		a.log.Warn("log query failed", "function", name, "err", err)
	}
}

// parseSince reads "10m" (ago) or an RFC 3339 time.
func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil {
			return time.Now().Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("not a duration or time: %w", err)
	}
	return t, nil
}
