package lambda

import (
	"context"

	"github.com/nimbusfn/nimbus/internal/runtime/spare"
)

// Spares. Most of what Nimbus adds to a Lambda cold start is the sandbox's
// work before the bootstrap's first instruction: fork, namespaces, exec,
// the cgroup join, rlimits and the private file system, 2–3 ms on our
// machines. A template keeps one spare made ahead (package spare): its
// Runtime API server listening and its process set up and held stopped
// before its first instruction (sandbox.Config.Held). No code of the
// function has run in it and it uses no CPU; a cold start lets it go
// instead of starting a process. The first spare is made when a template
// is prepared. Where processes cannot be held (no ptrace), there are no
// spares: a running spare would run the function's init with no instance
// to show for it.

// buildSpare makes a spare instance: its process held.
func (t *template) buildSpare() (*instance, error) {
	rt := t.rt
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StartTimeout)
	defer cancel()
	in, err := t.launch(ctx, true)
	if err != nil {
		rt.log.Debug("making a spare instance failed", "function", t.spec.Function, "err", err)
		return nil, err
	}
	if !in.p.Held() {
		rt.log.Info("no spare instances: processes cannot be held stopped here")
		_ = in.Close()
		return nil, spare.ErrUnsupported
	}
	return in, nil
}
