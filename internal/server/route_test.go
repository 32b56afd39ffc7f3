package server

import "testing"

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/fn/hello": true, "/fn/hello/": true, "/fn/hello/a/b.c": true, "/t/acme/fn/x/...": true,
		"/fn//hello": false, "/fn/./hello": false, "/fn/a/../b": false, "/fn/a/.": false, "/fn/a/..": false,
	} {
		if got := cleanPath(p); got != want {
			t.Errorf("cleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}
