package gateway

import "testing"

func TestParsePath(t *testing.T) {
	for _, c := range []struct {
		path                            string
		tenant, name, qual, sub, script string
		ok                              bool
	}{
		{"/fn/hello", "", "hello", "", "/", "/fn/hello", true},
		{"/fn/hello/", "", "hello", "", "/", "/fn/hello", true},
		{"/fn/hello@2/a/b", "", "hello", "2", "/a/b", "/fn/hello@2", true},
		{"/fn/hello@live", "", "hello", "live", "/", "/fn/hello@live", true},
		{"/t/acme/fn/hello/x?y", "acme", "hello", "", "/x?y", "/t/acme/fn/hello", true},
		{"/t/acme/fn/hello@3", "acme", "hello", "3", "/", "/t/acme/fn/hello@3", true},
		{"/t/acme", "", "", "", "", "", false},
		{"/t/acme/", "", "", "", "", "", false},
		{"/t/acme/api/x", "", "", "", "", "", false},
		{"/fn/", "", "", "", "/", "/fn/", false},
		{"/api/v1/functions", "", "", "", "", "", false},
	} {
		tenant, name, qual, sub, script, ok := ParsePath(c.path)
		if ok != c.ok || (ok && (tenant != c.tenant || name != c.name || qual != c.qual || sub != c.sub || script != c.script)) {
			t.Errorf("ParsePath(%q) = %q %q %q %q %q %v; want %q %q %q %q %q %v", c.path,
				tenant, name, qual, sub, script, ok, c.tenant, c.name, c.qual, c.sub, c.script, c.ok)
		}
	}
}
