package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"

	"github.com/nimbusfn/nimbus/internal/registry"
)

// sdkDir is where a new Go project keeps its copy of the SDK.
const sdkDir = "nimbus-sdk"

func init() { register(newNewCmd) }

func newNewCmd(app *App) *cobra.Command {
	var lang, dir string
	c := &cobra.Command{
		Use:   "new NAME --lang go|python|node",
		Short: "Create a ready-to-deploy function project",
		Long: `Create a function project in ./NAME (or --dir): a Go function using the Nimbus
SDK (with a copy of the SDK, so it builds offline), a Python handler.py or a
Node handler.js, each with a README and a nimbus.yaml stack file.`,
		Example: `  nimbus new hello --lang go && nimbus deploy hello --code ./hello
  nimbus new thumbnails --lang python --dir ./functions/thumbnails`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := registry.CheckName("function", name); err != nil {
				return err
			}
			if dir == "" {
				dir = name
			}
			files, err := projectFiles(name, lang)
			if err != nil {
				return err
			}
			if err := writeProject(dir, files); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "created %s in %s\ndeploy it with:\n  nimbus deploy %s --code %s\n", name, dir, name, dir)
			return nil
		},
	}
	c.Flags().StringVar(&lang, "lang", "go", "language: go, python or node")
	c.Flags().StringVar(&dir, "dir", "", "directory to create (default ./NAME)")
	return c
}

// projectFiles returns the files of a new project by relative path.
func projectFiles(name, lang string) (map[string][]byte, error) {
	files := map[string][]byte{}
	add := func(p, s string) { files[p] = []byte(strings.ReplaceAll(s, "{{name}}", name)) }
	switch lang {
	case "go":
		add("main.go", goMain)
		add("go.mod", goMod)
		add("README.md", goReadme)
		add("nimbus.yaml", stackTemplate("."))
		err := fs.WalkDir(nimbus.Source, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(nimbus.Source, p)
			if err != nil {
				return err
			}
			files[filepath.Join(sdkDir, filepath.FromSlash(p))] = b
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("copying the Nimbus SDK: %w", err)
		}
		if _, ok := files[filepath.Join(sdkDir, "go.mod")]; !ok {
			return nil, errors.New("this nimbus binary carries no copy of the SDK's go.mod")
		}
	case "python", "python3":
		add("handler.py", pyHandler)
		add("README.md", pyReadme)
		add("nimbus.yaml", stackTemplate(".", "python3"))
	case "node", "nodejs", "javascript", "js":
		add("handler.js", nodeHandler)
		add("README.md", nodeReadme)
		add("nimbus.yaml", stackTemplate(".", "nodejs"))
	default:
		return nil, fmt.Errorf("--lang %q: use go, python or node", lang)
	}
	return files, nil
}

// writeProject writes files under dir, which must not exist or be empty.
func writeProject(dir string, files map[string][]byte) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s already exists and is not empty: pick another NAME or --dir", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("creating project: %w", err)
	}
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("creating project: %w", err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return fmt.Errorf("creating project: %w", err)
		}
	}
	return nil
}

func stackTemplate(code string, runtime ...string) string {
	s := "# Deploy with: nimbus deploy -f nimbus.yaml\nversion: 1\nfunctions:\n  {{name}}:\n    code: " + code + "\n"
	if len(runtime) > 0 {
		s += "    runtime: " + runtime[0] + "\n"
	}
	return s + "    memory: 128\n    timeout: 30s\n"
}

const goMain = `// Command {{name}} is a Nimbus function: a plain http.Handler.
package main

import (
	"encoding/json"
	"net/http"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

func main() {
	nimbus.Handle(http.HandlerFunc(handle))
}

func handle(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"message": "Hello, " + name + "!",
		"path":    r.URL.Path,
	})
}
`

const goMod = `module {{name}}

go 1.26

require github.com/nimbusfn/nimbus/sdk/go v0.0.0

replace github.com/nimbusfn/nimbus/sdk/go => ./` + sdkDir + `
`

const goReadme = `# {{name}}

A Nimbus function in Go. Deploy it with ` + "`nimbus deploy {{name}} --code .`" + ` (or
` + "`nimbus deploy -f nimbus.yaml`" + `), then call it with ` + "`nimbus invoke {{name}}`" + ` or
` + "`curl http://127.0.0.1:8080/fn/{{name}}?name=Ada`" + `.

` + "`go run .`" + ` serves it locally on 127.0.0.1:8080; ` + "`nimbus build .`" + ` writes {{name}}.wasm.
The SDK is vendored in ./` + sdkDir + ` so the project builds offline.
`

const pyHandler = `"""{{name}}: a Nimbus function (python3 runtime).

An HTTP request arrives as an API Gateway HTTP API v2.0 event; return a dict
with statusCode, headers and body (or any JSON value for a 200).
"""
import json


def handler(event, context):
    params = event.get("queryStringParameters") or {}
    name = params.get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": f"Hello, {name}!", "path": event.get("rawPath", "/")}),
    }
`

const pyReadme = `# {{name}}

A Nimbus function in Python. Deploy it with ` + "`nimbus deploy {{name}} --code .`" + ` (or
` + "`nimbus deploy -f nimbus.yaml`" + `), then call it with ` + "`nimbus invoke {{name}}`" + `.
`

const nodeHandler = `// {{name}}: a Nimbus function (nodejs runtime).
//
// An HTTP request arrives as an API Gateway HTTP API v2.0 event; return an
// object with statusCode, headers and body (or any JSON value for a 200).
exports.handler = async (event, context) => {
  const params = event.queryStringParameters || {};
  const name = params.name || "world";
  return {
    statusCode: 200,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ message: ` + "`Hello, ${name}!`" + `, path: event.rawPath || "/" }),
  };
};
`

const nodeReadme = `# {{name}}

A Nimbus function in Node.js. Deploy it with ` + "`nimbus deploy {{name}} --code .`" + ` (or
` + "`nimbus deploy -f nimbus.yaml`" + `), then call it with ` + "`nimbus invoke {{name}}`" + `.
`
