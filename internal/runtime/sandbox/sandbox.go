//go:build linux

// Package sandbox owns starting function processes isolated from the server
// and from each other — own cgroup (memory, pids, cpu), namespaces, an
// unprivileged user, rlimits, a private temp dir and a scrubbed environment —
// and killing an instance's whole process tree. Layers the machine does not
// give are reported by Probe and skipped.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config describes one sandboxed process.
type Config struct {
	// Args is argv; Args[0] is resolved against Dir, then the PATH in Env
	// (default /usr/local/bin:/usr/bin:/bin).
	Args []string
	// Dir is the working directory (the unpacked code). It must be readable by
	// the sandbox user; the path leading to it need not be.
	Dir string
	// Env is the complete environment; nothing is inherited from the server.
	// TMPDIR is set to the instance's temp dir (/tmp when it replaces the
	// host's, see privateFS), and so is HOME unless Env sets it.
	Env []string
	// MemoryMB is the cgroup memory limit (0 = none).
	MemoryMB int
	// Pids bounds processes and threads in the instance (0 = DefaultPids).
	Pids int
	// CPUs is a cpu quota in cores (0 = none).
	CPUs float64
	// Stdout and Stderr receive the process's output (nil = discarded).
	Stdout, Stderr io.Writer
	// Held leaves the process stopped before its first instruction, every
	// layer set up, until Process.Run lets it go: the start's cost is paid
	// ahead and no code of it runs meanwhile. Without ptrace (see Probe)
	// the process runs at once and Run does nothing.
	Held bool
}

// DefaultPath is the PATH used to find Args[0] when Env has none.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin"

// Open-file limit of an instance.
const nofile = 65536

// Process is a running sandboxed process and everything it owns.
type Process struct {
	cmd     *exec.Cmd
	pid     int
	tmp     string
	cg      *cgroup
	born    bool     // started inside its cgroup
	private bool     // read-only file system but for tmp (see privateFS)
	maskTmp bool     // and tmp is the instance's /tmp,
	keep    []string // with these dirs of the host's /tmp mounted back in
	memMB   int
	done    chan struct{}
	exitErr error
	killed  atomic.Bool

	killOnce sync.Once
	killErr  error

	// held: stopped at exec, traced by the spawner sp, until Run; the
	// process is waited for only once it runs (or is killed).
	held     atomic.Bool
	sp       *spawner
	waitOnce sync.Once
}

// ExitError says why a sandboxed process ended.
type ExitError struct {
	// Code is the exit status, or -1 when a signal ended the process.
	Code   int
	Signal syscall.Signal
	// OOM is set when the cgroup's OOM killer killed a process of the
	// instance; LimitMB is the limit it hit.
	OOM     bool
	LimitMB int
	// Killed is set when Kill ended the process.
	Killed bool
}

func (e *ExitError) Error() string {
	switch {
	case e.OOM:
		return fmt.Sprintf("killed: out of memory (limit %d MB)", e.LimitMB)
	case e.Killed:
		return "killed by Nimbus"
	case e.Code >= 0:
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return "killed by signal " + e.Signal.String()
}

// Start starts cfg.Args in a sandbox. ctx bounds only the start.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if len(cfg.Args) == 0 || cfg.Args[0] == "" {
		return nil, errors.New("sandbox: no command to run")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pr := probed()
	dirf, err := os.Open(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open working dir: %w", err)
	}
	defer dirf.Close()
	path, err := resolve(cfg.Args[0], cfg.Dir, envValue(cfg.Env, "PATH", DefaultPath))
	if err != nil {
		return nil, err
	}

	p := &Process{done: make(chan struct{}), memMB: cfg.MemoryMB}
	if p.tmp, err = os.MkdirTemp("", "nimbus-sbx-"); err != nil {
		return nil, fmt.Errorf("sandbox: create temp dir: %w", err)
	}
	if pr.root {
		if err := os.Chown(p.tmp, SandboxUID, SandboxGID); err != nil {
			os.RemoveAll(p.tmp)
			return nil, fmt.Errorf("sandbox: give temp dir to the sandbox user: %w", err)
		}
	}
	if pr.cg != nil {
		if p.cg, err = pr.cg.create(&cfg); err != nil {
			os.RemoveAll(p.tmp)
			return nil, err
		}
	}
	if err := p.start(&cfg, pr, path, dirf); err != nil {
		if p.cg != nil {
			p.cg.killAll()
			p.cg.remove()
		}
		os.RemoveAll(p.tmp)
		return nil, err
	}
	if !p.held.Load() {
		p.waitOnce.Do(func() { go p.wait() })
	}
	return p, nil
}

// Held reports whether the process is held: set up, stopped before its
// first instruction, waiting for Run.
func (p *Process) Held() bool { return p.held.Load() }

// Run lets a held process go (Config.Held). It does nothing for a process
// that is not held. A held process that can no longer run (it was killed)
// is cleaned up, and Run returns the reason.
func (p *Process) Run() error {
	if !p.held.CompareAndSwap(true, false) {
		return nil
	}
	var err error
	p.sp.do(func() { err = syscall.PtraceDetach(p.pid) })
	p.waitOnce.Do(func() { go p.wait() })
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("sandbox: let process %d run: %w", p.pid, err)
	}
	return nil
}

func (p *Process) start(cfg *Config, pr probeResult, path string, dirf *os.File) error {
	env := make([]string, 0, len(cfg.Env)+2)
	home := false
	for _, kv := range cfg.Env {
		home = home || strings.HasPrefix(kv, "HOME=")
		if !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	cgfd := -1
	if p.cg != nil {
		var err error
		if cgfd, err = p.cg.fd(); err != nil {
			return fmt.Errorf("sandbox: open cgroup: %w", err)
		}
		if cgfd >= 0 {
			defer syscall.Close(cgfd)
		}
	}
	for {
		attr := &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
			Ptrace:    !ptraceOff.Load(),
		}
		if cgfd >= 0 {
			// v2: the child is born in its cgroup (clone3 CLONE_INTO_CGROUP).
			attr.UseCgroupFD, attr.CgroupFD = true, cgfd
		}
		ns := pr.root && !nsOff.Load()
		if ns {
			attr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
			attr.Unshareflags = syscall.CLONE_NEWNS // Go marks / private in it
		}
		// The private file system is set up while the process is stopped at
		// exec, in its own mount namespace.
		p.private = ns && attr.Ptrace && !fsOff.Load()
		p.keep, p.maskTmp = nil, false
		if p.private {
			p.keep, p.maskTmp = tmpKeeps(append([]string{cfg.Dir, path}, cfg.Args[1:]...)...)
		}
		tmp := p.tmp
		if p.maskTmp {
			tmp = privateTmp
		}
		env := append(env[:len(env):len(env)], "TMPDIR="+tmp)
		if !home {
			env = append(env, "HOME="+tmp)
		}
		if pr.root {
			attr.Credential = &syscall.Credential{Uid: SandboxUID, Gid: SandboxGID, Groups: []uint32{}}
		}
		p.cmd = &exec.Cmd{
			Path: path,
			Args: cfg.Args,
		}
		if pr.prlimitBin != "" && !(attr.Ptrace && pr.inside && !insideOff.Load()) {
			// We may not set another user's rlimits (no CAP_SYS_RESOURCE),
			// nor (untraced) make the process set its own: prlimit(1) sets
			// its own and execs the command.
			l := p.rlimits(cfg, pr)
			p.cmd.Path = pr.prlimitBin
			p.cmd.Args = append([]string{pr.prlimitBin,
				fmt.Sprintf("--nofile=%d:%d", l[0].Cur, l[0].Max),
				fmt.Sprintf("--nproc=%d:%d", l[1].Cur, l[1].Max),
				"--core=0:0", "--", path}, cfg.Args[1:]...)
		}
		*p.cmd = exec.Cmd{
			Path: p.cmd.Path,
			Args: p.cmd.Args,
			Env:  env,
			// The child changes directory after dropping to the sandbox user;
			// through our descriptor's magic link it needs search permission
			// on Dir only, not on the (possibly private) path leading to it.
			Dir:         fmt.Sprintf("/proc/self/fd/%d", dirf.Fd()),
			Stdout:      cfg.Stdout,
			Stderr:      cfg.Stderr,
			SysProcAttr: attr,
			WaitDelay:   2 * time.Second,
		}
		err := p.startTraced(cfg, pr)
		if err == nil {
			return nil
		}
		var fe *fsError
		if errors.As(err, &fe) {
			if fsOff.CompareAndSwap(false, true) {
				logger.Warn("could not give instances a read-only file system with a private /tmp; they see the host's", "err", err)
			}
			continue
		}
		var ie *insideError
		if errors.As(err, &ie) {
			if insideOff.CompareAndSwap(false, true) {
				logger.Warn("could not make the process set its own rlimits; using prlimit(1) where there is one", "err", err)
			}
			continue
		}
		var se *startError
		if errors.As(err, &se) && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS)) {
			if ns {
				if nsOff.CompareAndSwap(false, true) {
					logger.Warn("namespaces refused; instances share the server's namespaces", "err", err)
				}
				continue
			}
			if attr.Ptrace {
				if ptraceOff.CompareAndSwap(false, true) {
					logger.Warn("ptrace refused; cgroup and rlimits are applied just after start", "err", err)
				}
				continue
			}
		}
		return fmt.Errorf("sandbox: start %s: %w", cfg.Args[0], err)
	}
}

// startTraced starts the command. With ptrace the child stops right after
// execve, before its first instruction: we move it into its (v1) cgroup and
// set its rlimits there (or make it set them itself), then let it run. That keeps the server a single
// binary with no re-exec shim, whose Go start-up would cost milliseconds per
// cold start.
func (p *Process) startTraced(cfg *Config, pr probeResult) (err error) {
	onSpawner(func(sp *spawner) (retire bool) {
		retire, err = p.startOnSpawner(cfg, pr, sp)
		return retire
	})
	return err
}

// startOnSpawner is startTraced on a spawner thread (see spawner.go). It
// reports retire when the thread must serve no further start.
func (p *Process) startOnSpawner(cfg *Config, pr probeResult, sp *spawner) (retire bool, err error) {
	traced := p.cmd.SysProcAttr.Ptrace
	p.born = false
	if !traced && p.cg != nil && p.cg.sys.v2 == "" {
		// Not stopped at exec, the process could fork before it joined
		// its cgroup: it is born in it instead.
		if retire, err := p.startInCgroup(); err != nil || retire {
			return retire, err
		}
	} else if err := p.cmd.Start(); err != nil {
		return false, &startError{err}
	}
	p.pid = p.cmd.Process.Pid
	fail := func(err error) (bool, error) {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		return false, err
	}
	if traced {
		if err := waitStop(p.pid); err != nil {
			return fail(fmt.Errorf("wait for exec stop: %w", err))
		}
	}
	if err := p.setup(cfg, pr, traced); err != nil {
		// Killed while still stopped: it never runs half set up.
		return fail(err)
	}
	if traced && cfg.Held {
		p.sp = sp
		p.held.Store(true)
		return false, nil
	}
	if traced {
		if err := syscall.PtraceDetach(p.pid); err != nil {
			return fail(fmt.Errorf("detach: %w", err))
		}
	}
	return false, nil
}

// startInCgroup starts the command with the (spawner) thread moved into the
// (v1) cgroup, so that the child is born in it. If the thread cannot be
// moved back, the process is killed and the spawner retires.
func (p *Process) startInCgroup() (retire bool, err error) {
	back, err := p.cg.enterThread()
	if err == nil {
		if err = p.cmd.Start(); err != nil {
			err = &startError{err}
		}
	}
	if berr := back(); berr != nil {
		if err == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		return true, fmt.Errorf("start in cgroup: leave the instance cgroup: %w", berr)
	}
	if err != nil {
		if _, ok := err.(*startError); ok {
			return false, err
		}
		return false, fmt.Errorf("start in cgroup: %w", err)
	}
	p.born = true
	return false, nil
}

func waitStop(pid int) error {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, syscall.WALL, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if !ws.Stopped() {
		return fmt.Errorf("process ended before it ran (status %v)", ws)
	}
	return nil
}

// insideError is a failure to make the process set its own rlimits; the
// start is retried with prlimit(1).
type insideError struct{ err error }

func (e *insideError) Error() string { return "set rlimits inside the process: " + e.err.Error() }
func (e *insideError) Unwrap() error { return e.err }

// startError is a failure of the fork/exec itself (as opposed to the setup
// that follows), which may be a layer the kernel refuses.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

func (p *Process) setup(cfg *Config, pr probeResult, traced bool) (err error) {
	if p.private {
		// The mounts run on their own thread, alongside the rest.
		fsDone := privateFS(p.pid, p.tmp, p.maskTmp, p.keep)
		defer func() {
			if ferr := <-fsDone; ferr != nil && err == nil {
				err = &fsError{ferr}
			}
		}()
	}
	if p.cg != nil && !p.cmd.SysProcAttr.UseCgroupFD && !p.born {
		if err := p.cg.join(p.pid); err != nil {
			return err
		}
	}
	res := []int{unix.RLIMIT_NOFILE, unix.RLIMIT_NPROC, unix.RLIMIT_CORE}
	if !pr.prlimitDirect {
		if traced && pr.inside && !insideOff.Load() {
			l := p.rlimits(cfg, pr)
			if err := setRlimitsInside(p.pid, res, l[:]); err != nil {
				return &insideError{err}
			}
		}
		return nil
	}
	l := p.rlimits(cfg, pr)
	for i, res := range res {
		if err := unix.Prlimit(p.pid, res, &l[i], nil); err != nil {
			return fmt.Errorf("set rlimit %d: %w", res, err)
		}
	}
	return nil
}

// rlimits are nofile, nproc and core, never above the server's own hard
// limits (raising them needs CAP_SYS_RESOURCE).
func (p *Process) rlimits(cfg *Config, pr probeResult) [3]unix.Rlimit {
	nproc := uint64(16384) // per user, across instances: the pids cgroup is the real bound
	if p.cg == nil || !p.cg.sys.has("pids") {
		nproc = uint64(cfg.Pids)
		if nproc == 0 {
			nproc = DefaultPids
		}
	}
	var out [3]unix.Rlimit
	for i, l := range []struct {
		res int
		val uint64
	}{{unix.RLIMIT_NOFILE, nofile}, {unix.RLIMIT_NPROC, nproc}, {unix.RLIMIT_CORE, 0}} {
		var own unix.Rlimit
		if unix.Getrlimit(l.res, &own) == nil && own.Max < l.val {
			l.val = own.Max
		}
		out[i] = unix.Rlimit{Cur: l.val, Max: l.val}
	}
	return out
}

func (p *Process) wait() {
	err := p.cmd.Wait()
	ee := &ExitError{Code: -1, LimitMB: p.memMB}
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				ee.Signal = ws.Signal()
			} else {
				ee.Code = ws.ExitStatus()
			}
		}
	} else if err == nil {
		ee.Code = 0
	}
	if p.cg != nil && p.cg.oomKills() > 0 {
		ee.OOM = true
	} else if p.killed.Load() && ee.Signal == syscall.SIGKILL {
		ee.Killed = true
	}
	p.exitErr = ee
	close(p.done)
}

// Pid is the process id (in the server's pid namespace).
func (p *Process) Pid() int { return p.pid }

// TmpDir is the instance's private writable temp dir as the server sees it;
// the process sees it at $TMPDIR (/tmp, /var/tmp and /dev/shm when it has a
// private file system).
func (p *Process) TmpDir() string { return p.tmp }

// Done is closed when the main process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr says why the process ended (an *ExitError); nil before Done.
func (p *Process) ExitErr() error {
	select {
	case <-p.done:
		return p.exitErr
	default:
		return nil
	}
}

// OutOfMemory reports whether the cgroup OOM killer has killed any process of
// the instance (not necessarily the main one).
func (p *Process) OutOfMemory() bool {
	return p.cg != nil && p.cg.oomKills() > 0
}

// Kill kills the whole process tree, waits for it, and removes the cgroup and
// the temp dir. It is idempotent.
func (p *Process) Kill() error {
	p.killOnce.Do(func() { p.killErr = p.kill() })
	return p.killErr
}

func (p *Process) kill() error {
	p.killed.Store(true)
	if p.held.CompareAndSwap(true, false) {
		// Never ran: killed where it stopped, then waited for.
		p.cmd.Process.Kill()
		p.waitOnce.Do(func() { go p.wait() })
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill() // by pidfd: never hits a recycled pid
	}
	if p.cg != nil {
		p.cg.killAll()
	} else {
		// The group outlives the main process while members remain.
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	var err error
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		err = fmt.Errorf("sandbox: process %d did not exit after SIGKILL", p.pid)
	}
	if p.cg != nil {
		if cerr := p.cg.remove(); err == nil {
			err = cerr
		}
	}
	if rerr := os.RemoveAll(p.tmp); rerr != nil && err == nil {
		err = fmt.Errorf("sandbox: remove temp dir: %w", rerr)
	}
	return err
}

// resolve finds the executable: a name with a slash is relative to dir (the
// child runs it from there); a bare name is looked up in dir, then in path.
func resolve(name, dir, path string) (string, error) {
	if filepath.IsAbs(name) {
		return name, checkExec(name, name)
	}
	if strings.Contains(name, "/") {
		rel := "./" + filepath.Clean(name)
		return rel, checkExec(filepath.Join(dir, name), name)
	}
	if checkExec(filepath.Join(dir, name), name) == nil {
		return "./" + name, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		full := filepath.Join(d, name)
		if checkExec(full, name) == nil {
			return full, nil
		}
	}
	return "", fmt.Errorf("sandbox: command %q not found in the code or in PATH %s", name, path)
}

func checkExec(full, name string) error {
	fi, err := os.Stat(full)
	if err != nil {
		return fmt.Errorf("sandbox: command %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("sandbox: command %q is not an executable file (mode %v)", name, fi.Mode())
	}
	return nil
}

func envValue(env []string, key, def string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return def
}
