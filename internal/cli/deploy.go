package cli

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbusfn/nimbus/internal/registry"
	"github.com/nimbusfn/nimbus/internal/stack"
)

// Version is a deployed, immutable version of a function as the API returns it.
type Version = registry.Version

// DeploySpec is what Deploy needs: a function name, the path of its code and
// the configuration (zero fields = server defaults).
type DeploySpec struct {
	Name string
	// Code is a .wasm file, a Go main package directory, a directory with
	// handler.py or handler.js, a bootstrap file, or a .zip/.tar.gz bundle.
	Code   string
	Config registry.Config
	// Progress, if not nil, receives progress lines (building, uploading).
	Progress io.Writer
}

// maxArtifact is the largest artifact the server accepts.
const maxArtifact = 100 << 20

func init() { register(newDeployCmd) }

func newDeployCmd(app *App) *cobra.Command {
	var (
		code, file, runtime, timeout, entry, handler, auth, idle, queueTimeout string
		memory, concurrency, minI, maxI, queueMax, maxRequests                 int
		env, secrets                                                           []string
		snapshot                                                               bool
	)
	c := &cobra.Command{
		Use:   "deploy NAME --code PATH | deploy -f nimbus.yaml [NAME...]",
		Short: "Deploy a function (a new version), or every function of a stack file",
		Long: `Deploy a function: its code is uploaded (skipped when the server already has
it) and a new immutable version is created; the "live" alias follows it.

PATH may be a .wasm module; a directory with a Go main package (built with
GOOS=wasip1 GOARCH=wasm: the runtime is wasm if it uses the Nimbus SDK, wasm-cgi
otherwise); a directory with handler.py or handler.js (zipped; python3 or
nodejs); a Lambda "bootstrap" executable (lambda); or a .zip/.tar.gz bundle.
Only the flags you set go into the configuration; the rest keep the server's
defaults.`,
		Example: `  nimbus deploy hello --code ./examples/hello
  nimbus deploy resize --code resize.wasm --memory 256 --timeout 10s --env QUALITY=80
  nimbus deploy api --code ./api.zip --runtime process --entry './server' --concurrency 50 --min 1
  nimbus deploy -f nimbus.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(0)
			defer cancel()
			var progress io.Writer
			if isTerminal(app.Stderr) {
				progress = app.Stderr
			}
			if file != "" {
				if code != "" {
					return errors.New("use either -f FILE or --code PATH, not both")
				}
				return app.deployStack(ctx, file, args, progress)
			}
			if len(args) != 1 {
				return errors.New("deploy needs a function NAME and --code PATH (or -f nimbus.yaml)")
			}
			if code == "" {
				return errors.New("--code PATH is missing: a .wasm file, a Go directory, a handler directory or a bundle")
			}
			if err := registry.CheckName("function", args[0]); err != nil {
				return err
			}
			cfg := registry.Config{}
			f := cmd.Flags()
			if f.Changed("runtime") {
				cfg.Runtime = runtime
			}
			if f.Changed("memory") {
				if memory <= 0 {
					return errors.New("--memory must be a positive number of MB")
				}
				cfg.MemoryMB = memory
			}
			var err error
			if cfg.Timeout, err = flagDuration(f.Changed("timeout"), "timeout", timeout); err != nil {
				return err
			}
			if len(env) > 0 {
				cfg.Env = map[string]string{}
				for _, kv := range env {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--env %q: write it as KEY=VALUE", kv)
					}
					cfg.Env[k] = v
				}
			}
			cfg.Entry, cfg.Handler = entry, handler
			if f.Changed("auth") {
				switch auth {
				case "public", "key", "user":
				default:
					return fmt.Errorf("--auth %q: use public, key or user", auth)
				}
				cfg.Auth = auth
			}
			for name, p := range map[string]*int{"concurrency": &concurrency, "min": &minI, "max": &maxI, "queue-max": &queueMax, "max-requests": &maxRequests} {
				if f.Changed(name) && *p < 0 {
					return fmt.Errorf("--%s must not be negative", name)
				}
			}
			cfg.Concurrency, cfg.Scale.Min, cfg.Scale.Max = concurrency, minI, maxI
			cfg.Queue.Max, cfg.MaxRequests = queueMax, maxRequests
			if cfg.Scale.Idle, err = flagDuration(f.Changed("idle"), "idle", idle); err != nil {
				return err
			}
			if cfg.Queue.Timeout, err = flagDuration(f.Changed("queue-timeout"), "queue-timeout", queueTimeout); err != nil {
				return err
			}
			if f.Changed("snapshot") {
				cfg.Snapshot = &snapshot
			}
			cfg.Secrets = secrets
			v, err := app.Deploy(ctx, DeploySpec{Name: args[0], Code: code, Config: cfg, Progress: progress})
			if err != nil {
				return err
			}
			app.printDeployed(v)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&code, "code", "", "the function's code: .wasm, Go dir, handler dir, bootstrap, .zip or .tar.gz")
	fl.StringVarP(&file, "file", "f", "", "deploy the functions of a stack file (nimbus.yaml)")
	fl.StringVar(&runtime, "runtime", "", "wasm, wasm-cgi, process, lambda, python3 or nodejs (default: detected)")
	fl.IntVar(&memory, "memory", 0, "memory cap in MB")
	fl.StringVar(&timeout, "timeout", "", "deadline of one invocation, e.g. 30s")
	fl.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringVar(&entry, "entry", "", "command that starts a process bundle")
	fl.StringVar(&handler, "handler", "", "handler of a managed runtime, e.g. handler.handler")
	fl.StringVar(&auth, "auth", "", "who may call it over HTTP: public, key or user")
	fl.IntVar(&concurrency, "concurrency", 0, "requests one instance takes at once")
	fl.IntVar(&minI, "min", 0, "instances kept warm")
	fl.IntVar(&maxI, "max", 0, "most instances per node")
	fl.StringVar(&idle, "idle", "", "close an instance idle this long, e.g. 5m")
	fl.IntVar(&queueMax, "queue-max", 0, "requests that may wait for an instance")
	fl.StringVar(&queueTimeout, "queue-timeout", "", "how long a request may wait for an instance, e.g. 2s")
	fl.IntVar(&maxRequests, "max-requests", 0, "recycle an instance after this many requests")
	fl.BoolVar(&snapshot, "snapshot", true, "start wasm instances from a snapshot taken after initialisation")
	fl.StringArrayVar(&secrets, "secret", nil, "secret to expose to the function (repeatable)")
	return c
}

func flagDuration(set bool, name, s string) (registry.Duration, error) {
	if !set {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--%s %q: write a duration like 30s, 500ms or 5m", name, s)
	}
	return registry.Duration(d), nil
}

// functionURL is where a function answers on the data plane.
func (app *App) functionURL(name string) string {
	return strings.TrimRight(app.Server, "/") + "/fn/" + name
}

func (app *App) printDeployed(v *Version) {
	fmt.Fprintf(app.Stdout, "deployed %s version %d → %s\n", v.Function, v.Number, app.functionURL(v.Function))
}

// Deploy packages d.Code, uploads it unless the server already holds it, and
// creates a new version of d.Name.
func (app *App) Deploy(ctx context.Context, d DeploySpec) (*Version, error) {
	if err := registry.CheckName("function", d.Name); err != nil {
		return nil, err
	}
	data, runtime, err := packageCode(ctx, d.Code, d.Config.Runtime, d.Progress)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", d.Name, err)
	}
	cfg := d.Config
	cfg.Runtime = runtime
	digest, err := app.upload(ctx, data, d.Progress)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", d.Name, err)
	}
	body := struct {
		Name   string          `json:"name"`
		Digest string          `json:"digest"`
		Config registry.Config `json:"config"`
	}{d.Name, digest, cfg}
	var v Version
	if err := app.call(ctx, http.MethodPost, "/api/v1/functions", body, &v); err != nil {
		return nil, fmt.Errorf("deploying %s: %w", d.Name, err)
	}
	if v.Function == "" {
		v.Function = d.Name
	}
	return &v, nil
}

// upload stores data as an artifact unless the server has it already, and
// returns its digest.
func (app *App) upload(ctx context.Context, data []byte, progress io.Writer) (string, error) {
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := app.request(ctx, http.MethodHead, "/api/v1/artifacts/"+digest, nil, nil)
	if err == nil {
		resp.Body.Close()
		return digest, nil
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		return "", fmt.Errorf("checking artifact %s: %w", digest, err)
	}
	var body io.Reader = bytes.NewReader(data)
	if progress != nil {
		body = &progressReader{r: body, total: int64(len(data)), w: progress, last: time.Now()}
	}
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	resp, err = app.request(ctx, http.MethodPost, "/api/v1/artifacts", body, h)
	if progress != nil {
		fmt.Fprint(progress, "\r\033[K")
	}
	if err != nil {
		return "", fmt.Errorf("uploading %s: %w", humanBytes(int64(len(data))), err)
	}
	defer resp.Body.Close()
	var got struct {
		Digest string `json:"digest"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return "", fmt.Errorf("decoding the upload answer: %w", err)
	}
	if got.Digest != digest {
		return "", fmt.Errorf("the server stored the code as %s; expected %s", got.Digest, digest)
	}
	return digest, nil
}

// progressReader reports upload progress at most every 100 ms.
type progressReader struct {
	r     io.Reader
	n     int64
	total int64
	w     io.Writer
	last  time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if time.Since(p.last) >= 100*time.Millisecond || err == io.EOF {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\ruploading %s / %s (%d%%)", humanBytes(p.n), humanBytes(p.total), p.n*100/max(p.total, 1))
	}
	return n, err
}

// packageCode turns a code path into the bytes to upload and the runtime to
// ask for ("" lets the server detect it from the module).
func packageCode(ctx context.Context, p, runtime string, progress io.Writer) ([]byte, string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, "", fmt.Errorf("code: %w", err)
	}
	if st.IsDir() {
		for _, h := range []struct{ file, runtime string }{{"handler.py", "python3"}, {"handler.js", "nodejs"}, {"handler.mjs", "nodejs"}} {
			if _, err := os.Stat(filepath.Join(p, h.file)); err == nil {
				data, err := zipDir(p)
				if err != nil {
					return nil, "", err
				}
				return data, orDefault(runtime, h.runtime), nil
			}
		}
		if _, err := os.Stat(filepath.Join(p, "bootstrap")); err == nil {
			data, err := zipDir(p)
			if err != nil {
				return nil, "", err
			}
			return data, orDefault(runtime, "lambda"), nil
		}
		if runtime == "lambda" || runtime == "process" {
			// A Go program for a process runtime: build it for this machine.
			data, err := BuildNative(ctx, p, progress)
			if err != nil {
				return nil, "", err
			}
			return data, runtime, nil
		}
		data, err := BuildGo(ctx, p, progress)
		if err != nil {
			return nil, "", err
		}
		return data, runtime, nil
	}
	if st.Size() > maxArtifact {
		return nil, "", fmt.Errorf("code %s is %s; the limit is %s", p, humanBytes(st.Size()), humanBytes(maxArtifact))
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, "", fmt.Errorf("code: %w", err)
	}
	base := filepath.Base(p)
	switch {
	case strings.HasSuffix(base, ".wasm"):
		if !isWasm(data) {
			return nil, "", fmt.Errorf("%s is not a WebAssembly module (no \\0asm header)", p)
		}
		return data, runtime, nil
	case isWasm(data):
		return data, runtime, nil
	case base == "bootstrap":
		return data, orDefault(runtime, "lambda"), nil
	case strings.HasSuffix(base, ".zip"):
		if runtime != "" {
			return data, runtime, nil
		}
		r, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, "", fmt.Errorf("%s is not a valid zip file: %w", p, err)
		}
		names := make([]string, 0, len(r.File))
		for _, f := range r.File {
			names = append(names, f.Name)
		}
		rt, err := runtimeFromBundle(p, names)
		return data, rt, err
	case strings.HasSuffix(base, ".tar.gz") || strings.HasSuffix(base, ".tgz"):
		if runtime != "" {
			return data, runtime, nil
		}
		names, err := tarNames(data)
		if err != nil {
			return nil, "", fmt.Errorf("%s is not a valid .tar.gz: %w", p, err)
		}
		rt, err := runtimeFromBundle(p, names)
		return data, rt, err
	}
	if runtime != "" {
		return data, runtime, nil
	}
	return nil, "", fmt.Errorf("cannot tell how to run %s: give a .wasm module, a directory, a bootstrap file or a .zip/.tar.gz, or set --runtime", p)
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// runtimeFromBundle picks a runtime from the files in a bundle's top level.
func runtimeFromBundle(p string, names []string) (string, error) {
	has := map[string]bool{}
	for _, n := range names {
		has[path.Clean(strings.TrimPrefix(n, "./"))] = true
	}
	switch {
	case has["bootstrap"]:
		return "lambda", nil
	case has["handler.py"]:
		return "python3", nil
	case has["handler.js"] || has["handler.mjs"]:
		return "nodejs", nil
	}
	return "", fmt.Errorf("cannot tell how to run bundle %s (no bootstrap, handler.py or handler.js at its top): set --runtime (process needs --entry too)", p)
}

func tarNames(data []byte) ([]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names = append(names, h.Name)
	}
}

// zipDir zips the files under dir (skipping hidden directories) into a
// deterministic archive: the same files give the same bytes, so an unchanged
// function is not uploaded again.
func zipDir(dir string) ([]byte, error) {
	type entry struct {
		rel  string
		path string
		mode fs.FileMode
	}
	var files []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil // sockets, symlinks and devices stay behind
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, entry{filepath.ToSlash(rel), p, info.Mode()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("packing %s: %w", dir, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	epoch := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.rel, Method: zip.Deflate, Modified: epoch}
		h.SetMode(f.mode.Perm())
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, fmt.Errorf("packing %s: %w", f.rel, err)
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return nil, fmt.Errorf("packing %s: %w", f.rel, err)
		}
		_, err = io.Copy(w, fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("packing %s: %w", f.rel, err)
		}
		if buf.Len() > maxArtifact {
			return nil, fmt.Errorf("packing %s: the bundle is over the %s limit", dir, humanBytes(maxArtifact))
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("packing %s: %w", dir, err)
	}
	return buf.Bytes(), nil
}

// deployStack deploys the functions of a stack file (only those in only, if
// given) and then their triggers.
func (app *App) deployStack(ctx context.Context, file string, only []string, progress io.Writer) error {
	st, err := stack.Load(file)
	if err != nil {
		return err
	}
	names := st.Names()
	if len(only) > 0 {
		for _, n := range only {
			if st.Functions[n] == nil {
				return fmt.Errorf("%s has no function %q (it has %s)", file, n, strings.Join(names, ", "))
			}
		}
		names = only
	}
	for _, name := range names {
		fn := st.Functions[name]
		v, err := app.Deploy(ctx, DeploySpec{Name: name, Code: st.CodePath(fn), Config: fn.Config, Progress: progress})
		if err != nil {
			return fmt.Errorf("%s:%d: %w", file, fn.Line, err)
		}
		app.printDeployed(v)
		for i, raw := range fn.Triggers {
			tname, body, err := triggerBody(raw, i)
			if err != nil {
				return fmt.Errorf("%s: function %s: %w", file, name, err)
			}
			p := "/api/v1/functions/" + url.PathEscape(name) + "/triggers/" + url.PathEscape(tname)
			if err := app.call(ctx, http.MethodPut, p, body, nil); err != nil {
				return fmt.Errorf("%s: function %s: trigger %s: %w", file, name, tname, err)
			}
			fmt.Fprintf(app.Stdout, "  trigger %s of %s set\n", tname, name)
		}
	}
	return nil
}

// triggerBody names a stack file trigger (its "name", else "KIND-N") and
// returns the JSON document for the triggers API.
func triggerBody(raw json.RawMessage, i int) (string, map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", nil, fmt.Errorf("trigger %d: %w", i+1, err)
	}
	name, _ := m["name"].(string)
	if name == "" {
		kind, _ := m["kind"].(string)
		if kind == "" {
			kind = "trigger"
		}
		name = fmt.Sprintf("%s-%d", kind, i+1)
		m["name"] = name
	}
	if err := registry.CheckName("trigger", name); err != nil {
		return "", nil, err
	}
	return name, m, nil
}
