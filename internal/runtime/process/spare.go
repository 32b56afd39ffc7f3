//go:build linux

package process

import (
	"context"
	"net"

	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// Spares, as for the lambda runtime: a template keeps one instance set up
// ahead (package spare) with its process forked, namespaced, in its
// cgroup, with its rlimits and private file system, and held stopped
// before its first instruction (sandbox.Config.Held), its port chosen and
// its output pipes and host API endpoint open. No code of the function
// has run and it uses no CPU; a cold start lets it go and waits for it to
// answer on $PORT, as for a fresh start. Where processes cannot be held
// (no ptrace) there are none.
//
// A spare's port is only reserved by convention: it was free when the
// spare was made, and a start checks that it still is, else discards the
// spare and starts afresh on a new port.

// buildSpare makes a spare instance: its process held.
func (t *Template) buildSpare() (*Instance, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.startTimeout)
	defer cancel()
	in, err := t.launch(ctx, true)
	if err != nil {
		t.rt.log.Debug("making a spare instance failed", "function", t.spec.Function, "err", err)
		return nil, err
	}
	if !in.proc.Held() {
		t.rt.log.Info("no spare instances: processes cannot be held stopped here")
		_ = in.Close()
		return nil, spare.ErrUnsupported
	}
	return in, nil
}

// takeSpare returns the template's spare, let go, when it has one whose
// port is still free.
func (t *Template) takeSpare(ctx context.Context) (*Instance, bool) {
	in, ok := t.spares.Take(ctx)
	if !ok {
		return nil, false
	}
	if !portFree(in.addr) {
		t.rt.log.Debug("a spare's port was taken meanwhile; starting afresh", "function", t.spec.Function, "addr", in.addr)
		_ = in.Close()
		return nil, false
	}
	if err := in.proc.Run(); err != nil {
		_ = in.Close() // gone while held
		return nil, false
	}
	return in, true
}

// portFree reports whether addr can be listened on.
func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
