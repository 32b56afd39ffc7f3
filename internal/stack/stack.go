// Package stack owns the Nimbus stack file (nimbus.yaml): several functions,
// their configuration and triggers in one YAML document, decoded strictly so
// that every mistake is reported with the line that holds it.
package stack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// CurrentVersion is the stack file format this package reads.
const CurrentVersion = 1

// MaxSize bounds a stack file; anything larger is refused before parsing.
const MaxSize = 1 << 20

// Runtimes are the runtime names a stack file may ask for.
var Runtimes = []string{"wasm", "wasm-cgi", "process", "lambda", "python3", "nodejs"}

// File is a decoded, validated stack file.
type File struct {
	Version int `json:"version"`
	// Functions maps a function name to its definition.
	Functions map[string]*Function `json:"functions"`
	// Dir is the directory that relative code paths are resolved against
	// (the stack file's directory; "" for Parse).
	Dir string `json:"-"`
}

// Function is one function of a stack file.
type Function struct {
	// Code is the path of the function's code as written in the file.
	Code string `json:"code"`
	// Config is the version configuration the file asks for; zero fields
	// mean the server's default.
	Config registry.Config `json:"config"`
	// Triggers are passed through, as JSON objects, to the triggers API.
	Triggers []json.RawMessage `json:"triggers,omitempty"`
	// Line is where the function's definition starts in the file.
	Line int `json:"-"`
}

// Names returns the function names in a stable (sorted) order.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Functions))
	for n := range f.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CodePath returns the code path of fn resolved against the file's directory.
func (f *File) CodePath(fn *Function) string {
	if filepath.IsAbs(fn.Code) || f.Dir == "" {
		return fn.Code
	}
	return filepath.Join(f.Dir, fn.Code)
}

// Error is a mistake in a stack file at a line (0 when unknown).
type Error struct {
	File   string
	Line   int
	Column int
	Msg    string
}

func (e *Error) Error() string {
	prefix := e.File
	if prefix == "" {
		prefix = "stack file"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d:%d: %s", prefix, e.Line, e.Column, e.Msg)
	}
	return prefix + ": " + e.Msg
}

// Load reads and parses the stack file at path; relative code paths resolve
// against its directory.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading stack file: %w", err)
	}
	defer fh.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitedReader{r: fh, n: MaxSize + 1}); err != nil {
		return nil, fmt.Errorf("reading stack file %s: %w", path, err)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			se.File = path
		}
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("stack file %s: %w", path, err)
	}
	f.Dir = abs
	return f, nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("stack file is larger than %d bytes", MaxSize)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// The raw YAML shapes. Every field is optional; strict decoding refuses
// anything not listed here.
type rawFile struct {
	Version   *int                    `yaml:"version"`
	Functions map[string]*rawFunction `yaml:"functions"`
}

type rawFunction struct {
	Code         string            `yaml:"code"`
	Runtime      string            `yaml:"runtime"`
	Memory       int               `yaml:"memory"`
	Timeout      string            `yaml:"timeout"`
	Env          map[string]string `yaml:"env"`
	Entry        string            `yaml:"entry"`
	Handler      string            `yaml:"handler"`
	Auth         string            `yaml:"auth"`
	Concurrency  int               `yaml:"concurrency"`
	Scale        *rawScale         `yaml:"scale"`
	Queue        *rawQueue         `yaml:"queue"`
	MaxRequests  int               `yaml:"max_requests"`
	Snapshot     *bool             `yaml:"snapshot"`
	Secrets      []string          `yaml:"secrets"`
	AllowedHosts []string          `yaml:"allowed_hosts"`
	Triggers     []map[string]any  `yaml:"triggers"`
}

type rawScale struct {
	Min  int    `yaml:"min"`
	Max  int    `yaml:"max"`
	Idle string `yaml:"idle"`
}

type rawQueue struct {
	Max     int    `yaml:"max"`
	Timeout string `yaml:"timeout"`
}

// Parse decodes and validates a stack file.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxSize {
		return nil, &Error{Msg: fmt.Sprintf("stack file is larger than %d bytes", MaxSize)}
	}
	astFile, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(err, nil)
	}
	if len(astFile.Docs) != 1 || astFile.Docs[0] == nil || astFile.Docs[0].Body == nil {
		if len(astFile.Docs) > 1 {
			return nil, &Error{Msg: "a stack file holds exactly one YAML document; remove the extra '---' documents"}
		}
		return nil, &Error{Msg: "stack file is empty: start it with 'version: 1' and a 'functions:' map"}
	}
	root := astFile.Docs[0].Body
	var raw rawFile
	if err := yaml.NodeToValue(root, &raw, yaml.Strict()); err != nil {
		return nil, yamlError(err, root)
	}
	p := &checker{root: root}
	if raw.Version == nil {
		return nil, p.errAt("version is missing: add 'version: 1' at the top", "version")
	}
	if *raw.Version != CurrentVersion {
		return nil, p.errAt(fmt.Sprintf("version %d is not supported: this Nimbus reads version %d", *raw.Version, CurrentVersion), "version")
	}
	if len(raw.Functions) == 0 {
		return nil, p.errAt("no functions: add a 'functions:' map with at least one function", "functions")
	}
	out := &File{Version: CurrentVersion, Functions: make(map[string]*Function, len(raw.Functions))}
	names := make([]string, 0, len(raw.Functions))
	for n := range raw.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fn, err := p.function(name, raw.Functions[name])
		if err != nil {
			return nil, err
		}
		out.Functions[name] = fn
	}
	return out, nil
}

// checker turns validation mistakes into errors that carry the line of the
// YAML node they concern.
type checker struct{ root ast.Node }

func (p *checker) errAt(msg string, path ...string) *Error {
	e := &Error{Msg: msg}
	if tk := lookup(p.root, path); tk != nil && tk.Position != nil {
		e.Line, e.Column = tk.Position.Line, tk.Position.Column
	}
	return e
}

func (p *checker) function(name string, rf *rawFunction) (*Function, error) {
	at := func(msg string, path ...string) *Error {
		if len(path) == 0 {
			return p.errAtKey(fmt.Sprintf("function %q: %s", name, msg), "functions", name)
		}
		return p.errAt(fmt.Sprintf("function %q: %s", name, msg), append([]string{"functions", name}, path...)...)
	}
	if err := registry.CheckName("function", name); err != nil {
		return nil, p.errAtKey(err.Error(), "functions", name)
	}
	if rf == nil {
		return nil, at("is empty: give it at least 'code: PATH'")
	}
	if rf.Code == "" {
		return nil, at("code is missing: add 'code: ./path' (a .wasm file, a Go or handler directory, or a bundle)")
	}
	fn := &Function{Code: rf.Code}
	if tk := lookupKey(p.root, []string{"functions", name}); tk != nil && tk.Position != nil {
		fn.Line = tk.Position.Line
	}
	c := &fn.Config
	if rf.Runtime != "" {
		known := false
		for _, r := range Runtimes {
			known = known || r == rf.Runtime
		}
		if !known {
			return nil, at(fmt.Sprintf("runtime %q is unknown: use one of %v", rf.Runtime, Runtimes), "runtime")
		}
		c.Runtime = rf.Runtime
	}
	if rf.Memory < 0 {
		return nil, at("memory must be a positive number of MB", "memory")
	}
	c.MemoryMB = rf.Memory
	d, err := duration(rf.Timeout)
	if err != nil {
		return nil, at("timeout: "+err.Error(), "timeout")
	}
	c.Timeout = d
	for k := range rf.Env {
		if k == "" {
			return nil, at("env has an empty variable name", "env")
		}
	}
	if len(rf.Env) > 0 {
		c.Env = rf.Env
	}
	c.Entry, c.Handler = rf.Entry, rf.Handler
	switch rf.Auth {
	case "", "public", "key", "user":
		c.Auth = rf.Auth
	default:
		return nil, at(fmt.Sprintf("auth %q is unknown: use public, key or user", rf.Auth), "auth")
	}
	if rf.Concurrency < 0 {
		return nil, at("concurrency must not be negative", "concurrency")
	}
	c.Concurrency = rf.Concurrency
	if s := rf.Scale; s != nil {
		if s.Min < 0 || s.Max < 0 {
			return nil, at("scale.min and scale.max must not be negative", "scale")
		}
		if s.Max > 0 && s.Min > s.Max {
			return nil, at(fmt.Sprintf("scale.min (%d) is larger than scale.max (%d)", s.Min, s.Max), "scale")
		}
		idle, err := duration(s.Idle)
		if err != nil {
			return nil, at("scale.idle: "+err.Error(), "scale", "idle")
		}
		c.Scale = registry.Scale{Min: s.Min, Max: s.Max, Idle: idle}
	}
	if q := rf.Queue; q != nil {
		if q.Max < 0 {
			return nil, at("queue.max must not be negative", "queue")
		}
		t, err := duration(q.Timeout)
		if err != nil {
			return nil, at("queue.timeout: "+err.Error(), "queue", "timeout")
		}
		c.Queue = registry.Queue{Max: q.Max, Timeout: t}
	}
	if rf.MaxRequests < 0 {
		return nil, at("max_requests must not be negative", "max_requests")
	}
	c.MaxRequests = rf.MaxRequests
	c.Snapshot = rf.Snapshot
	for _, s := range rf.Secrets {
		if err := registry.CheckName("secret", s); err != nil {
			return nil, at(err.Error(), "secrets")
		}
	}
	c.Secrets = rf.Secrets
	c.AllowedHosts = rf.AllowedHosts
	for i, t := range rf.Triggers {
		if t == nil {
			return nil, at(fmt.Sprintf("trigger %d is empty", i+1), "triggers")
		}
		b, err := json.Marshal(t)
		if err != nil {
			return nil, at(fmt.Sprintf("trigger %d cannot be passed on as JSON: %v", i+1, err), "triggers")
		}
		fn.Triggers = append(fn.Triggers, b)
	}
	return fn, nil
}

// errAtKey reports a mistake in a mapping key itself (a bad function name).
func (p *checker) errAtKey(msg string, path ...string) *Error {
	e := &Error{Msg: msg}
	if tk := lookupKey(p.root, path); tk != nil && tk.Position != nil {
		e.Line, e.Column = tk.Position.Line, tk.Position.Column
	}
	return e
}

func duration(s string) (registry.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write it like 30s, 500ms or 5m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q must not be negative", s)
	}
	return registry.Duration(d), nil
}

// yamlError turns a goccy/go-yaml error into an *Error with its position.
func yamlError(err error, root ast.Node) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{Msg: ye.GetMessage()}
		var te *yaml.TypeError
		if errors.As(err, &te) && te.Token != nil {
			e.Msg = fmt.Sprintf("%q is not %s", te.Token.Value, kindOf(te.DstType))
			if root != nil {
				if key := keyOf(root, te.Token); key != "" {
					e.Msg = fmt.Sprintf("%s: %s", key, e.Msg)
				}
			}
		}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{Msg: err.Error()}
}

// mappingValues returns the key/value pairs of a mapping node.
func mappingValues(n ast.Node) []*ast.MappingValueNode {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}
	case *ast.TagNode:
		return mappingValues(m.Value)
	case *ast.AnchorNode:
		return mappingValues(m.Value)
	}
	return nil
}

func find(n ast.Node, path []string) *ast.MappingValueNode {
	var found *ast.MappingValueNode
	for _, key := range path {
		found = nil
		for _, mv := range mappingValues(n) {
			if mv.Key != nil && mv.Key.GetToken() != nil && mv.Key.GetToken().Value == key {
				found = mv
				break
			}
		}
		if found == nil {
			return nil
		}
		n = found.Value
	}
	return found
}

// lookup returns the token of the value at path, or of the deepest key found.
func lookup(root ast.Node, path []string) *token.Token {
	for i := len(path); i > 0; i-- {
		if mv := find(root, path[:i]); mv != nil {
			if i == len(path) && mv.Value != nil && mv.Value.GetToken() != nil {
				return mv.Value.GetToken()
			}
			return mv.Key.GetToken()
		}
	}
	return nil
}

// lookupKey returns the token of the key at path.
func lookupKey(root ast.Node, path []string) *token.Token {
	if mv := find(root, path); mv != nil {
		return mv.Key.GetToken()
	}
	return nil
}

// kindOf names a Go type the way a stack file author thinks of it.
func kindOf(t reflect.Type) string {
	if t == nil {
		return "of the right type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a map"
	case reflect.Pointer:
		return kindOf(t.Elem())
	}
	return "a " + t.String()
}

// keyOf returns the dotted key path whose value is the node holding tk.
func keyOf(root ast.Node, tk *token.Token) string {
	var walk func(n ast.Node, prefix string) string
	walk = func(n ast.Node, prefix string) string {
		for _, mv := range mappingValues(n) {
			if mv.Key == nil || mv.Key.GetToken() == nil || mv.Value == nil {
				continue
			}
			key := mv.Key.GetToken().Value
			if prefix != "" {
				key = prefix + "." + key
			}
			if vt := mv.Value.GetToken(); vt == tk || (vt != nil && vt.Position != nil && tk.Position != nil &&
				vt.Position.Line == tk.Position.Line && vt.Position.Column == tk.Position.Column) {
				return key
			}
			if k := walk(mv.Value, key); k != "" {
				return k
			}
		}
		if seq, ok := n.(*ast.SequenceNode); ok {
			for _, v := range seq.Values {
				if k := walk(v, prefix); k != "" {
					return k
				}
			}
		}
		return ""
	}
	return walk(root, "")
}
