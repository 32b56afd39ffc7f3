package lambda

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// TestStartFailures: a bootstrap that exits at once, or never asks for an
// event (and leaves a child behind), fails the start, and nothing is left.
func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name, script, want string
	}{
		{"exits", "#!/bin/sh\necho 'cannot start: missing config' >&2\nexit 3\n", "(exit status 3); stderr: cannot start: missing config"},
		{"never-asks", "#!/bin/sh\nsleep 300 &\necho waiting >&2\nexec sleep 300\n", "did not ask for an event within"},
		{"init-error", "#!/bin/sh\nexec /usr/bin/env python3 -c \"import http.client,os;c=http.client.HTTPConnection(os.environ['AWS_LAMBDA_RUNTIME_API']);" +
			"c.request('POST','/2018-06-01/runtime/init/error','{\\\"errorMessage\\\":\\\"no db\\\",\\\"errorType\\\":\\\"Init.Failed\\\"}');" +
			"c.getresponse().read();import time;time.sleep(300)\"\n", "failed to initialise: Init.Failed: no db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "init-error" {
				needInterp(t, "python3")
			}
			timeout := 15 * time.Second
			if tc.name == "never-asks" {
				timeout = time.Second
			}
			rt := New(Config{CacheDir: t.TempDir(), StartTimeout: timeout, Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tpl, err := rt.Prepare(ctx, testSpec(runtime.Lambda, "broken", nil), []byte(tc.script))
			if err != nil {
				t.Fatal(err)
			}
			inst, err := tpl.NewInstance(ctx)
			if err == nil {
				_ = inst.Close()
				t.Fatal("NewInstance succeeded")
			}
			wantKind(t, err, runtime.StartFailed, tc.want)
			// Nothing of this function is left running.
			eventually(t, 10*time.Second, func() error {
				if left := liveWithEnv("AWS_LAMBDA_FUNCTION_NAME=broken"); len(left) > 0 {
					return errorf("processes left: %v", left)
				}
				return nil
			})
		})
	}
}

// TestPrepareLambdaBadCode: code without a bootstrap is refused at Prepare.
func TestPrepareLambdaBadCode(t *testing.T) {
	rt := newTestRuntime(t)
	ctx := context.Background()
	_, err := rt.Prepare(ctx, testSpec(runtime.Lambda, "nobootstrap", nil), zipOf(t, map[string]string{"main": "x"}, 0o755))
	wantKind(t, err, runtime.BadCode, "no executable named bootstrap")
	_, err = rt.Prepare(ctx, testSpec(runtime.Lambda, "empty", nil), nil)
	wantKind(t, err, runtime.BadCode, "empty")
	_, err = rt.Prepare(ctx, testSpec(runtime.Lambda, "escape", nil), zipOf(t, map[string]string{"../bootstrap": "x"}, 0o755))
	wantKind(t, err, runtime.BadCode)
	// A bootstrap without its executable bit (zipped on Windows) still runs.
	spec := testSpec(runtime.Lambda, "noexec", nil)
	tpl, err := rt.Prepare(ctx, spec, zipOf(t, map[string]string{"bootstrap": "#!/bin/sh\nexit 0\n"}, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(tpl.(*template).dir, "bootstrap"))
	if err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("bootstrap mode %v, %v", fi.Mode(), err)
	}
	_, err = rt.Prepare(ctx, &runtime.Spec{Function: "x", Runtime: "wasm"}, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "cannot run runtime") {
		t.Errorf("wrong runtime: %v", err)
	}
}
