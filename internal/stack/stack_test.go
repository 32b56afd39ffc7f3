package stack

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/registry"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden parses every testdata/*.yaml and compares the result (as JSON)
// or the error with testdata/NAME.json or testdata/NAME.err.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			f, perr := Parse(data)
			var got []byte
			var golden string
			if perr != nil {
				got = []byte(perr.Error() + "\n")
				golden = strings.TrimSuffix(in, ".yaml") + ".err"
			} else {
				got, err = json.MarshalIndent(f, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, '\n')
				golden = strings.TrimSuffix(in, ".yaml") + ".json"
			}
			if strings.HasPrefix(name, "bad-") != (perr != nil) {
				t.Fatalf("%s: bad-* files must fail and others must parse; got error %v", in, perr)
			}
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing golden file (run go test -update): %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from %s:\n got: %s\nwant: %s", in, golden, got, want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		contains   []string
	}{
		{"unknown field", "version: 1\nfunctions:\n  hello:\n    code: x.wasm\n    memroy: 1\n", 5, []string{"memroy"}},
		{"unknown nested field", "version: 1\nfunctions:\n  a:\n    code: x\n    scale:\n      idle: 1s\n      maxx: 2\n", 7, []string{"maxx"}},
		{"unknown top-level field", "version: 1\nfunction: {}\n", 2, []string{"function"}},
		{"bad runtime", "version: 1\nfunctions:\n  a:\n    code: x\n    runtime: cobol\n", 5, []string{"cobol", "wasm-cgi"}},
		{"bad name", "version: 1\nfunctions:\n  A:\n    code: x\n", 3, []string{`"A"`, "lower-case"}},
		{"bad timeout", "version: 1\nfunctions:\n  a:\n    code: x\n    timeout: soon\n", 5, []string{"timeout", "soon"}},
		{"negative timeout", "version: 1\nfunctions:\n  a:\n    code: x\n    timeout: -1s\n", 5, []string{"negative"}},
		{"bad queue timeout", "version: 1\nfunctions:\n  a:\n    code: x\n    queue:\n      timeout: 3 days\n", 6, []string{"queue.timeout"}},
		{"missing version", "functions:\n  a:\n    code: x\n", 0, []string{"version is missing"}},
		{"wrong version", "version: 7\nfunctions:\n  a:\n    code: x\n", 1, []string{"version 7"}},
		{"no functions", "version: 1\n", 0, []string{"no functions"}},
		{"empty function", "version: 1\nfunctions:\n  a:\n", 3, []string{"empty"}},
		{"missing code", "version: 1\nfunctions:\n  a:\n    memory: 3\n", 3, []string{"code is missing"}},
		{"bad auth", "version: 1\nfunctions:\n  a:\n    code: x\n    auth: maybe\n", 5, []string{"auth", "maybe"}},
		{"negative memory", "version: 1\nfunctions:\n  a:\n    code: x\n    memory: -5\n", 5, []string{"memory"}},
		{"min over max", "version: 1\nfunctions:\n  a:\n    code: x\n    scale: {min: 3, max: 1}\n", 5, []string{"scale.min"}},
		{"wrong type", "version: 1\nfunctions:\n  a:\n    code: x\n    memory: lots\n", 5, []string{"functions.a.memory", `"lots" is not a whole number`}},
		{"bad secret name", "version: 1\nfunctions:\n  a:\n    code: x\n    secrets: [Bad_Name]\n", 5, []string{"secret"}},
		{"duplicate function", "version: 1\nfunctions:\n  a:\n    code: x\n  a:\n    code: y\n", 5, []string{"already defined"}},
		{"syntax error", "version: 1\nfunctions:\n  a: [\n", 3, nil},
		{"empty", "", 0, []string{"empty"}},
		{"two documents", "version: 1\n---\nversion: 1\n", 0, []string{"one YAML document"}},
		{"not a map", "- 1\n- 2\n", 1, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil {
				t.Fatal("Parse succeeded; want an error")
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not a *stack.Error", err, err)
			}
			if c.line != 0 && se.Line != c.line {
				t.Errorf("error %q reports line %d; want %d", err, se.Line, c.line)
			}
			for _, s := range c.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestConfigMapping(t *testing.T) {
	f, err := Parse([]byte(`version: 1
functions:
  hello:
    code: ./examples/hello
    memory: 64
    timeout: 1m30s
    env: {A: "1", B: two}
    scale: {min: 1, max: 4, idle: 2m}
    snapshot: false
    triggers:
      - {name: tick, kind: schedule, schedule: {cron: "@every 1m"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	fn := f.Functions["hello"]
	if fn == nil {
		t.Fatalf("function hello missing: %+v", f.Functions)
	}
	c := fn.Config
	if c.MemoryMB != 64 || c.Timeout.D() != 90*time.Second || c.Env["B"] != "two" ||
		c.Scale != (registry.Scale{Min: 1, Max: 4, Idle: registry.Duration(2 * time.Minute)}) ||
		c.Snapshot == nil || *c.Snapshot || c.Runtime != "" {
		t.Errorf("config = %+v", c)
	}
	if fn.Line != 3 {
		t.Errorf("function line = %d; want 3", fn.Line)
	}
	if len(fn.Triggers) != 1 {
		t.Fatalf("triggers = %s", fn.Triggers)
	}
	var trig map[string]any
	if err := json.Unmarshal(fn.Triggers[0], &trig); err != nil {
		t.Fatal(err)
	}
	if trig["name"] != "tick" || trig["schedule"].(map[string]any)["cron"] != "@every 1m" {
		t.Errorf("trigger = %v", trig)
	}
}

func TestLoadResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nimbus.yaml")
	if err := os.WriteFile(p, []byte("version: 1\nfunctions:\n  a:\n    code: ./fn\n  b:\n    code: /abs/b.wasm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.CodePath(f.Functions["a"]); got != filepath.Join(dir, "fn") {
		t.Errorf("CodePath(a) = %q", got)
	}
	if got := f.CodePath(f.Functions["b"]); got != "/abs/b.wasm" {
		t.Errorf("CodePath(b) = %q", got)
	}
	if got := f.Names(); strings.Join(got, ",") != "a,b" {
		t.Errorf("Names = %v", got)
	}
	if err := os.WriteFile(p, []byte("version: 1\nfunctions:\n  a:\n    code: ./fn\n    bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":5:") {
		t.Errorf("Load error = %v; want it to start with %s:5:", err, p)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("version: 1\nfunctions: {a: {code: x, triggers: [{k: [1, {2: 3}]}]}}"))
	f.Add([]byte("version: 1\nfunctions:\n  a: &x\n    code: y\n  b: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		type result struct {
			file *File
			err  error
		}
		ch := make(chan result, 1)
		go func() { f, err := Parse(data); ch <- result{f, err} }()
		var file *File
		var err error
		select {
		case r := <-ch:
			file, err = r.file, r.err
		case <-time.After(10 * time.Second):
			t.Fatalf("Parse(%q) did not return within 10s", data)
		}
		if err != nil {
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not a *stack.Error", err, err)
			}
			return
		}
		if file.Version != CurrentVersion || len(file.Functions) == 0 {
			t.Fatalf("accepted file %+v", file)
		}
		for name, fn := range file.Functions {
			if !registry.ValidName(name) || fn.Code == "" {
				t.Fatalf("accepted function %q %+v", name, fn)
			}
			for _, tr := range fn.Triggers {
				if !json.Valid(tr) {
					t.Fatalf("trigger %q is not JSON", tr)
				}
			}
		}
		if _, err := json.Marshal(file); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	})
}
