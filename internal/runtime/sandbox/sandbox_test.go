//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuf is a goroutine-safe output buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// codeDir makes a code dir the sandbox user can reach, holding an
// executable script.
func codeDir(t testing.TB, script string) string {
	t.Helper()
	root, err := CodeRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(root, "test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t *testing.T, cfg Config) *Process {
	t.Helper()
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func waitDone(t *testing.T, p *Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("process did not exit")
	}
}

// assertGone checks that Kill left no process, cgroup or temp dir behind.
func assertGone(t *testing.T, p *Process, pids []int) {
	t.Helper()
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	for _, pid := range append(pids, p.Pid()) {
		// A zombie is dead; reaping orphans is init's business.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil && strings.Contains(string(b), "\nUid:\t65534") && !strings.Contains(string(b), "\nState:\tZ") {
			t.Errorf("process %d still alive after Kill", pid)
		}
	}
	if p.cg != nil {
		for _, d := range p.cg.dirs {
			t.Errorf("cgroup %s left behind", d)
		}
	}
	if _, err := os.Stat(p.TmpDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s left behind (%v)", p.TmpDir(), err)
	}
}

func TestProbe(t *testing.T) {
	r := Probe()
	t.Log("\n" + r.String())
	if !strings.Contains(r.String(), "cgroup") {
		t.Fatal("report does not mention cgroups")
	}
	if os.Geteuid() == 0 && !r.Has("unprivileged user") {
		t.Fatal("running as root but no unprivileged user layer")
	}
}

func TestIsolation(t *testing.T) {
	t.Setenv("NIMBUS_SERVER_SECRET", "hunter2")
	dir := codeDir(t, `
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "pid=$$"
echo "tmp=$TMPDIR"
env | sort
touch "$TMPDIR/ok" && echo tmp-writable
touch ./nope 2>/dev/null || echo code-readonly
touch "$OPEN/nope" 2>&1 | grep -q 'Read-only file system' && echo world-writable-dir-readonly
echo v > /var/tmp/vt && echo var-tmp-writable
mkdir /dev/shm/q 2>/dev/null && echo shm-writable
echo null > /dev/null && echo dev-null-writable
test -r "$CODE/run.sh" && echo code-visible-by-path
echo t > /tmp/t && echo slash-tmp-writable
cat /proc/self/limits
cat /proc/self/cgroup
readlink /proc/self/ns/pid /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/mnt
`)
	// A world-writable dir of the host, outside the temp dirs the private
	// file system replaces: only its read-only view keeps the sandbox user
	// from writing there.
	open := "/nonexistent"
	if os.Geteuid() == 0 {
		d, err := os.MkdirTemp("/var/lib", "nimbus-sandbox-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
		open = d
	}
	mountsBefore, _ := os.ReadFile("/proc/self/mountinfo")
	var out, errb syncBuf
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin", "GREETING=hi", "OPEN=" + open, "CODE=" + dir}, Stdout: &out, Stderr: &errb, MemoryMB: 64, Pids: 32, CPUs: 0.5})
	if p.cg != nil {
		quota := "cpu.max"
		if p.cg.sys.v2 == "" {
			quota = "cpu.cfs_quota_us"
		}
		if dir, ok := p.cg.dirs["cpu"]; ok || p.cg.sys.v2 != "" {
			if dir == "" {
				dir = p.cg.dirs[""]
			}
			if got := readString(filepath.Join(dir, quota)); p.cg.sys.has("cpu") && !strings.HasPrefix(got, "50000") {
				t.Errorf("%s = %q, want 50000 (0.5 CPUs)", quota, got)
			}
		} else if p.cg.sys.has("cpu") {
			t.Error("no cpu cgroup for an instance with a cpu limit")
		}
	}
	waitDone(t, p)
	got := out.String()
	if ee := p.ExitErr(); ee == nil || ee.Error() != "exit status 0" {
		t.Fatalf("exit: %v\nstdout:\n%s\nstderr:\n%s", ee, got, errb.String())
	}
	tmp := p.TmpDir()
	if p.maskTmp {
		tmp = "/tmp"
	}
	must := []string{"GREETING=hi", "tmp=" + tmp + "\n", "tmp-writable", "Max core file size        0", "dev-null-writable", "code-visible-by-path"}
	if os.Geteuid() == 0 {
		must = append(must, "uid=65534 gid=65534 groups=65534", "pid=1", "code-readonly", "/nimbus/i-")
	}
	if os.Geteuid() == 0 && Probe().Has("file system") {
		if !p.private || !p.maskTmp {
			t.Fatalf("Probe reports a private file system, the instance did not get one with its own /tmp (private %v, own /tmp %v)", p.private, p.maskTmp)
		}
		must = append(must, "world-writable-dir-readonly", "var-tmp-writable", "shm-writable", "slash-tmp-writable")
	}
	for _, s := range must {
		if !strings.Contains(got, s) {
			t.Errorf("output lacks %q:\n%s", s, got)
		}
	}
	if strings.Contains(got, "hunter2") || strings.Contains(got, "NIMBUS_SERVER_SECRET") {
		t.Errorf("server environment leaked:\n%s", got)
	}
	if os.Geteuid() == 0 && Probe().Has("namespaces") {
		for _, ns := range []string{"pid", "ipc", "uts", "mnt"} {
			own, _ := os.Readlink("/proc/self/ns/" + ns)
			if strings.Contains(got, own+"\n") {
				t.Errorf("%s namespace shared with the server (%s)", ns, own)
			}
		}
	}
	if p.private {
		// Everything it wrote landed in its private temp dir, and none of its
		// mounts reached the server's namespace.
		for _, f := range []string{"ok", "vt", "q", "t"} {
			if _, err := os.Stat(filepath.Join(p.TmpDir(), f)); err != nil {
				t.Errorf("%s not in the private temp dir: %v", f, err)
			}
		}
		if after, _ := os.ReadFile("/proc/self/mountinfo"); string(after) != string(mountsBefore) {
			t.Errorf("the server's mounts changed:\nbefore:\n%s\nafter:\n%s", mountsBefore, after)
		}
	}
	assertGone(t, p, nil)
}

func TestExitStatusAndMissingCommand(t *testing.T) {
	dir := codeDir(t, "echo bye >&2; exit 3\n")
	var errb syncBuf
	p := start(t, Config{Args: []string{"run.sh"}, Dir: dir, Stderr: &errb})
	waitDone(t, p)
	var ee *ExitError
	if !errors.As(p.ExitErr(), &ee) || ee.Code != 3 || p.ExitErr().Error() != "exit status 3" {
		t.Fatalf("ExitErr = %v", p.ExitErr())
	}
	if strings.TrimSpace(errb.String()) != "bye" {
		t.Fatalf("stderr = %q", errb.String())
	}
	assertGone(t, p, nil)

	if _, err := Start(context.Background(), Config{Args: []string{"./missing"}, Dir: dir}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing command: %v", err)
	}
	if _, err := Start(context.Background(), Config{Args: []string{"no-such-cmd"}, Dir: dir}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing command in PATH: %v", err)
	}
}

func TestKillWholeTree(t *testing.T) {
	dir := codeDir(t, "sleep 1000 & (sleep 1000 & wait) & echo started; wait\n")
	var out syncBuf
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: &out})
	var pids []int
	eventually(t, 20*time.Second, func() error {
		pids = treePids(t, p)
		if len(pids) < 4 {
			return fmt.Errorf("%d processes in the tree", len(pids))
		}
		return nil
	})
	assertGone(t, p, pids)
	if !errors.As(p.ExitErr(), new(*ExitError)) || p.ExitErr().Error() != "killed by Nimbus" {
		t.Fatalf("ExitErr = %v", p.ExitErr())
	}
}

// treePids lists the instance's processes: its cgroup, else its process group.
func treePids(t *testing.T, p *Process) []int {
	if p.cg != nil {
		return p.cg.procs()
	}
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) > 2 && f[2] == strconv.Itoa(p.Pid()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestForkBomb(t *testing.T) {
	if !Probe().Has("pids limit") {
		t.Skip("no pids cgroup here")
	}
	dir := codeDir(t, "bomb() { bomb | bomb & }; bomb; sleep 1000\n")
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Pids: 32, Stderr: &syncBuf{}})
	eventually(t, 20*time.Second, func() error {
		ev := readString(filepath.Join(p.cg.dirs["pids"], "pids.events"))
		if !strings.HasPrefix(ev, "max ") || ev == "max 0" {
			return fmt.Errorf("pids.events = %q, pids.current = %s", ev, readString(filepath.Join(p.cg.dirs["pids"], "pids.current")))
		}
		return nil
	})
	pids := p.cg.procs()
	if n, _ := strconv.Atoi(readString(filepath.Join(p.cg.dirs["pids"], "pids.current"))); n > 32 {
		t.Fatalf("%d tasks, over the limit of 32", n)
	}
	assertGone(t, p, pids)
}

func TestMemoryHog(t *testing.T) {
	if !Probe().Has("memory limit") {
		t.Skip("no memory cgroup here")
	}
	dir := codeDir(t, "exec python3 -c 'a=[]\nwhile True: a.append(b\"x\" * (1<<20))'\n")
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, MemoryMB: 48, Stderr: &syncBuf{}})
	waitDone(t, p)
	if !p.OutOfMemory() {
		t.Fatalf("not reported as OOM: %v", p.ExitErr())
	}
	var ee *ExitError
	if !errors.As(p.ExitErr(), &ee) || !ee.OOM || p.ExitErr().Error() != "killed: out of memory (limit 48 MB)" {
		t.Fatalf("ExitErr = %v", p.ExitErr())
	}
	assertGone(t, p, nil)
}

func TestKillIdempotentAndConcurrent(t *testing.T) {
	dir := codeDir(t, "exec sleep 1000\n")
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); p.Kill() }()
	}
	wg.Wait()
	assertGone(t, p, nil)
}

func TestPrivateParentDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// t.TempDir is 0700: the sandbox user cannot reach inside it, but the
	// working directory is entered through the server's descriptor.
	private := filepath.Join(t.TempDir(), "code")
	os.Mkdir(private, 0o755)
	os.WriteFile(filepath.Join(private, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)
	if err := Reachable(private); err == nil {
		t.Fatal("Reachable accepted a dir under a 0700 parent")
	}
	var out syncBuf
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: private, Stdout: &out, Stderr: &syncBuf{}})
	waitDone(t, p)
	if out.String() != "ran\n" {
		t.Fatalf("stdout = %q, exit %v", out.String(), p.ExitErr())
	}
	root, err := CodeRoot(private)
	if err != nil || root == private || Reachable(root) != nil {
		t.Fatalf("CodeRoot = %q, %v", root, err)
	}
	assertGone(t, p, nil)
}

// TestDegradedLayers runs without namespaces and without ptrace (as when the
// kernel refuses them): the tree is still killed and nothing is left.
func TestDegradedLayers(t *testing.T) {
	nsOff.Store(true)
	ptraceOff.Store(true)
	t.Cleanup(func() { nsOff.Store(false); ptraceOff.Store(false) })
	if Probe().Has("namespaces") {
		t.Fatal("report still claims namespaces")
	}
	t.Run("tree", TestKillWholeTree)
	t.Run("forkbomb", TestForkBomb)
	t.Run("exit", TestExitStatusAndMissingCommand)
	t.Run("born in cgroup", func(t *testing.T) {
		pr := probed()
		if pr.cg == nil || pr.cg.v2 != "" {
			t.Skip("no cgroup v1")
		}
		// Its first child runs before a join after start could happen.
		dir := codeDir(t, "cat /proc/self/cgroup\n")
		var out syncBuf
		p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Stdout: &out})
		waitDone(t, p)
		for c := range p.cg.dirs {
			if !regexp.MustCompile(`(?m)^\d+:[^:]*\b` + c + `\b[^:]*:.*/nimbus/i-`).MatchString(out.String()) {
				t.Errorf("first child not in the instance's %s cgroup:\n%s", c, out.String())
			}
		}
		// The server's threads all went back to where they were.
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/cgroup")
			if strings.Contains(string(b), "/nimbus/i-") {
				t.Errorf("server thread %s left in an instance cgroup:\n%s", task.Name(), b)
			}
		}
		assertGone(t, p, nil)
	})
}

// TestRlimits checks the limits an instance runs with, soft and hard, by
// every way the machine offers to set them.
func TestRlimits(t *testing.T) {
	check := func(t *testing.T) {
		dir := codeDir(t, "cat /proc/self/limits\n")
		var out syncBuf
		p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Stdout: &out, Pids: 32})
		waitDone(t, p)
		want := p.rlimits(&Config{Pids: 32}, probed())
		for i, name := range []string{"Max open files", "Max processes", "Max core file size"} {
			val := strconv.FormatUint(want[i].Cur, 10)
			re := regexp.MustCompile(`(?m)^` + name + `\s+` + val + `\s+` + val + `\s`)
			if !re.MatchString(out.String()) {
				t.Errorf("want %s %s (soft and hard):\n%s", name, val, out.String())
			}
		}
		assertGone(t, p, nil)
	}
	t.Run("default", check)
	pr := probed()
	if pr.inside && insideOff.Load() {
		t.Error("the process could not set its own rlimits: prlimit(1) was used instead")
	}
	if pr.inside {
		// As after a failure to set them inside the process.
		insideOff.Store(true)
		t.Cleanup(func() { insideOff.Store(false) })
		if pr.prlimitBin == "" {
			return
		}
		if Probe().String() == pr.report.String() {
			t.Error("report unchanged with the fallback in use")
		}
		t.Run("prlimit", check)
	}
}

// TestSpareCgroups checks that a start takes the cgroup made ahead for its
// limits, and that no spare outlives the last instance by more than
// SpareLinger.
func TestSpareCgroups(t *testing.T) {
	pr := probed()
	if pr.cg == nil {
		t.Skip("no cgroups")
	}
	s := pr.cg
	dir := codeDir(t, "sleep 60\n")
	cfg := Config{Args: []string{"./run.sh"}, Dir: dir, MemoryMB: 77, Pids: 33}
	first := start(t, cfg)
	spareDirs := waitSpare(t, s, cfg)
	if got := readString(filepath.Join(spareDirs["pids"], "pids.max")); spareDirs["pids"] != "" && got != "33" {
		t.Errorf("spare pids.max = %q", got)
	}
	second := start(t, cfg)
	if !maps.Equal(second.cg.dirs, spareDirs) {
		t.Errorf("second instance got cgroup %v, not the spare %v", second.cg.dirs, spareDirs)
	}
	// The next spare is made; then the last instance takes every spare along.
	eventually(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if sp := s.spares[keyOf(&cfg)]; sp == nil || maps.Equal(sp.dirs, spareDirs) {
			return errors.New("no new spare")
		}
		return nil
	})
	s.mu.Lock()
	var left []string
	for _, sp := range s.spares {
		left = slices.AppendSeq(left, maps.Values(sp.dirs))
	}
	s.mu.Unlock()
	// Spares outlive the last instance by SpareLinger (for the next start
	// from zero), then go with the parent.
	was := SpareLinger
	SpareLinger = 300 * time.Millisecond
	defer func() { SpareLinger = was }()
	assertGone(t, first, nil)
	assertGone(t, second, nil)
	for _, d := range left {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("spare cgroup %s went with the last instance (%v); it should linger", d, err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		for _, d := range left {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("spare cgroup %s left %s after the last instance (%v)", d, SpareLinger, err)
			}
		}
		return nil
	})
}

// waitSpare waits until a spare cgroup for cfg's limits is made and returns
// its directories.
func waitSpare(t *testing.T, s *cgroupSys, cfg Config) map[string]string {
	t.Helper()
	var dirs map[string]string
	eventually(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		sp := s.spares[keyOf(&cfg)]
		if sp == nil {
			return errors.New("no spare made")
		}
		dirs = maps.Clone(sp.dirs)
		return nil
	})
	return dirs
}

// TestSpareAfterZero: a start after the last instance ended (a function
// scaled to zero) takes the spare made while it ran.
func TestSpareAfterZero(t *testing.T) {
	pr := probed()
	if pr.cg == nil {
		t.Skip("no cgroups")
	}
	s := pr.cg
	dir := codeDir(t, "sleep 60\n")
	cfg := Config{Args: []string{"./run.sh"}, Dir: dir, MemoryMB: 79, Pids: 31}
	first := start(t, cfg)
	spareDirs := waitSpare(t, s, cfg)
	assertGone(t, first, nil)
	next := start(t, cfg)
	if !maps.Equal(next.cg.dirs, spareDirs) {
		t.Errorf("the start after zero got cgroup %v, not the spare %v", next.cg.dirs, spareDirs)
	}
	assertGone(t, next, nil)
	// A stopping server releases what lingers at once.
	ReleaseIdle()
	if left := SpareCgroups(); len(left) > 0 {
		t.Errorf("spares left after ReleaseIdle: %v", left)
	}
}

// TestPrivateTmp: code outside the host's /tmp gets the instance's temp dir
// as its /tmp (as Lambda's /tmp), and what it writes there stays in it.
func TestPrivateTmp(t *testing.T) {
	if os.Geteuid() != 0 || !Probe().Has("file system") {
		t.Skip("no private file system here (needs root)")
	}
	dir, err := os.MkdirTemp("/var/lib", "nimbus-sandbox-code-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	name := fmt.Sprintf("nimbus-private-tmp-%d", os.Getpid())
	script := "#!/bin/sh\necho \"tmp=$TMPDIR\"\necho x > /tmp/" + name + " && echo tmp-writable\nls -A /tmp | wc -l\n"
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Stdout: &out, Stderr: &syncBuf{}})
	waitDone(t, p)
	if !p.maskTmp {
		t.Fatal("code outside /tmp, but the instance kept the host's /tmp")
	}
	if got := out.String(); got != "tmp=/tmp\ntmp-writable\n1\n" {
		t.Fatalf("output %q: want tmp=/tmp, a writable /tmp holding only the new file", got)
	}
	if _, err := os.Stat(filepath.Join("/tmp", name)); err == nil {
		os.Remove(filepath.Join("/tmp", name))
		t.Fatal("the instance wrote to the host's /tmp")
	}
	assertGone(t, p, nil)
}

// TestSweepStaleCgroups: an instance cgroup left by a Nimbus process that
// died without cleaning up is removed when instances start again.
func TestSweepStaleCgroups(t *testing.T) {
	pr := probed()
	if pr.cg == nil {
		t.Skip("no cgroups here")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := pr.cg.ensureParents(); err != nil {
		t.Fatal(err)
	}
	parent := pr.cg.v2
	for _, d := range pr.cg.v1 {
		parent = d
		break
	}
	stale := filepath.Join(parent, fmt.Sprintf("i-%d-1", dead.Process.Pid))
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Rmdir(stale) })
	p := start(t, Config{Args: []string{"/bin/true"}, Dir: codeDir(t, "")})
	waitDone(t, p)
	eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(stale); err == nil {
			return fmt.Errorf("stale cgroup %s is still there", stale)
		}
		return nil
	})
	assertGone(t, p, nil)
}

// A held process is set up but runs no code until Run; one killed while
// held leaves nothing behind.
func TestHeld(t *testing.T) {
	dir := codeDir(t, "echo ran\n")
	var out syncBuf
	p := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: &out, Held: true})
	if !p.held.Load() {
		t.Skip("the process was not held (ptrace refused)")
	}
	// Stopped at exec: traced, never scheduled, no output.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if state := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))[0]; state != "t" {
		t.Fatalf("held process is in state %s, want t (traced, stopped)", state)
	}
	select {
	case <-p.Done():
		t.Fatal("held process ended")
	case <-time.After(100 * time.Millisecond):
	}
	if out.String() != "" {
		t.Fatalf("held process wrote %q", out.String())
	}
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	var ee *ExitError
	if !errors.As(p.ExitErr(), &ee) || ee.Code != 0 || !strings.Contains(out.String(), "ran") {
		t.Fatalf("after Run: exit %v, output %q", p.ExitErr(), out.String())
	}
	if err := p.Run(); err != nil {
		t.Fatalf("second Run: %v", err)
	}

	// Killed while held.
	q := start(t, Config{Args: []string{"./run.sh"}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Held: true})
	assertGone(t, q, nil)
	if err := q.Run(); err != nil {
		t.Fatalf("Run after Kill: %v", err)
	}
}
