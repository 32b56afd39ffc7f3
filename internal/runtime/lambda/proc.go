package lambda

import (
	"context"
	"errors"
	"io"

	"github.com/nimbusfn/nimbus/internal/runtime/sandbox"
)

// procConfig is how one bootstrap process is started.
type procConfig struct {
	Args     []string
	Dir      string
	Env      []string
	MemoryMB int
	Pids     int
	CPUs     float64
	Stdout   io.Writer
	Stderr   io.Writer
	// Held starts the process stopped before its first instruction, until
	// Run (see sandbox.Config.Held).
	Held bool
}

// proc is a started bootstrap process and everything it spawned.
type proc interface {
	Pid() int
	// Done is closed when the process has exited.
	Done() <-chan struct{}
	// ExitErr is why it exited, valid after Done.
	ExitErr() error
	// Kill stops the process and all its descendants, and waits for them.
	Kill() error
	// Run lets a held process go; it does nothing for one that runs.
	Run() error
	// Held reports whether the process is held, not yet run.
	Held() bool
}

// startProc starts a bootstrap process in the sandbox: its own cgroup,
// namespaces, an unprivileged user and a private temp dir, where the machine
// gives them (sandbox.Probe reports which).
func startProc(ctx context.Context, cfg procConfig) (proc, error) {
	p, err := sandbox.Start(ctx, sandbox.Config{
		Args:     cfg.Args,
		Dir:      cfg.Dir,
		Env:      cfg.Env,
		MemoryMB: cfg.MemoryMB,
		Pids:     cfg.Pids,
		CPUs:     cfg.CPUs,
		Stdout:   cfg.Stdout,
		Stderr:   cfg.Stderr,
		Held:     cfg.Held,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// outOfMemory reports whether the memory limit ended the process (or killed
// one of its children).
func outOfMemory(p proc) bool {
	var ee *sandbox.ExitError
	if errors.As(p.ExitErr(), &ee) && ee.OOM {
		return true
	}
	o, ok := p.(interface{ OutOfMemory() bool })
	return ok && o.OutOfMemory()
}
