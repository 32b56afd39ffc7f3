package cli

import (
	"os"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestOpenAPISpec checks that api/openapi.yaml parses, is OpenAPI 3.1, has
// every path and method the CLI calls, and that every $ref resolves.
func TestOpenAPISpec(t *testing.T) {
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if spec["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", spec["openapi"])
	}
	paths, _ := spec["paths"].(map[string]any)
	want := map[string][]string{
		"/api/v1/artifacts":                           {"post"},
		"/api/v1/artifacts/{digest}":                  {"head"},
		"/api/v1/functions":                           {"get", "post"},
		"/api/v1/functions/{name}":                    {"get", "delete"},
		"/api/v1/functions/{name}/versions":           {"get"},
		"/api/v1/functions/{name}/versions/{version}": {"get"},
		"/api/v1/functions/{name}/aliases":            {"get"},
		"/api/v1/functions/{name}/aliases/{alias}":    {"put", "delete"},
		"/api/v1/functions/{name}/logs":               {"get"},
		"/api/v1/info":                                {"get"},
		"/fn/{target}":                                {"get", "post", "put", "delete"},
		"/fn/{target}/{path}":                         {"get", "post"},
		"/async/{name}":                               {"post"},
		"/async/{name}/{path}":                        {"post"},
		"/healthz":                                    {"get"},
		"/readyz":                                     {"get"},
		"/metrics":                                    {"get"},
	}
	for p, methods := range want {
		item, ok := paths[p].(map[string]any)
		if !ok {
			t.Errorf("path %s is missing", p)
			continue
		}
		for _, m := range methods {
			op, ok := item[m].(map[string]any)
			if !ok {
				t.Errorf("%s %s is missing", strings.ToUpper(m), p)
				continue
			}
			if _, ok := op["responses"]; !ok {
				t.Errorf("%s %s has no responses", strings.ToUpper(m), p)
			}
		}
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				if !resolves(spec, ref) {
					t.Errorf("$ref %s does not resolve", ref)
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(spec)
}

func resolves(spec map[string]any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = spec
	for _, part := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}
