//go:build linux

package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parentName is the Nimbus parent cgroup, created under the cgroup the server
// itself runs in (so the server's own limits still bound its instances), and
// removed again when this process has had no instance for SpareLinger.
const parentName = "nimbus"

// cgroupSys is the cgroup hierarchy found at probe time: either one v2 parent
// directory, or one v1 parent directory per controller.
type cgroupSys struct {
	v2     string            // v2: the parent directory; "" on v1
	v1     map[string]string // v1: controller → parent directory
	mount  map[string]string // v1: controller → mount point
	detail string            // what was found, for the report

	mu   sync.Mutex
	live int // instances of this process
	// parents reports that the parent directories exist (made by the first
	// instance, removed SpareLinger after the last one).
	parents bool
	idle    *time.Timer // removes spares and parents once idle long enough
	// spares are fresh cgroups made ahead, off the start path, for the next
	// instance with the same limits; they outlive the last instance by
	// SpareLinger, so that a function scaled to zero starts again without
	// making one.
	spares    map[cgKey]*cgroup
	refilling map[cgKey]bool
}

// cgKey is the limits a cgroup is made with.
type cgKey struct {
	memMB, pids int
	cpus        float64
}

func keyOf(cfg *Config) cgKey {
	pids := cfg.Pids
	if pids <= 0 {
		pids = DefaultPids
	}
	return cgKey{max(cfg.MemoryMB, 0), pids, max(cfg.CPUs, 0)}
}

// Spares: at most maxSpares limit sets, each made spareDelay after a start
// took (or missed) its spare, so that making it does not compete with that
// start for the CPU.
const (
	maxSpares  = 16
	spareDelay = 100 * time.Millisecond
)

// SpareLinger is how long spares and the parent cgroup stay after the last
// instance ended. What a killed server leaves is swept by the next one.
var SpareLinger = 10 * time.Minute

var instanceSeq atomic.Uint64

// cgroup is one instance's cgroup (one directory per v1 controller).
type cgroup struct {
	sys  *cgroupSys
	dirs map[string]string // controller ("" on v2) → directory
}

func (s *cgroupSys) has(ctrl string) bool {
	if s.v2 != "" {
		return strings.Contains(" "+readString(filepath.Join(s.v2, "cgroup.subtree_control"))+" ", " "+ctrl+" ")
	}
	_, ok := s.v1[ctrl]
	return ok
}

// sweepStale removes instance cgroups left by Nimbus processes that are no
// longer running (killed before they could clean up), killing what still
// runs in them. Names are i-{server pid}-{n}; a cgroup whose server pid is
// alive (or was reused) is left alone.
func (s *cgroupSys) sweepStale() {
	parents := []string{s.v2}
	if s.v2 == "" {
		parents = parents[:0]
		for _, d := range s.v1 {
			parents = append(parents, d)
		}
	}
	for _, parent := range parents {
		ents, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range ents {
			var pid, n int
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "i-") {
				continue
			}
			if _, err := fmt.Sscanf(e.Name(), "i-%d-%d", &pid, &n); err != nil || pid == os.Getpid() || pid <= 0 {
				continue
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				continue
			}
			dir := filepath.Join(parent, e.Name())
			for _, line := range strings.Fields(readString(filepath.Join(dir, "cgroup.procs"))) {
				if p, err := strconv.Atoi(line); err == nil && p > 0 {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
			for range 50 {
				if syscall.Rmdir(dir) == nil || readString(filepath.Join(dir, "cgroup.procs")) == "" && syscall.Rmdir(dir) == nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
}

// ensureParents creates the parent directories (and enables v2 controllers).
func (s *cgroupSys) ensureParents() error {
	defer s.sweepStale()
	if s.v2 != "" {
		if err := os.Mkdir(s.v2, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		ctrls := readString(filepath.Join(s.v2, "cgroup.controllers"))
		var enable []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if strings.Contains(" "+ctrls+" ", " "+c+" ") {
				enable = append(enable, "+"+c)
			}
		}
		if len(enable) > 0 {
			return os.WriteFile(filepath.Join(s.v2, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0)
		}
		return nil
	}
	for c, dir := range s.v1 {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	return nil
}

// create returns an instance cgroup with the limits of cfg: a spare made
// ahead when there is one, else a new one.
func (s *cgroupSys) create(cfg *Config) (*cgroup, error) {
	key := keyOf(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.refillLocked(key, *cfg)
	if s.live == 0 && s.parents {
		// Starting again after an idle spell: what servers that died
		// meanwhile left is swept off the start path.
		go s.sweepStale()
	}
	if cg := s.spares[key]; cg != nil {
		delete(s.spares, key)
		s.live++
		return cg, nil
	}
	if !s.parents {
		if err := s.ensureParents(); err != nil { // sweeps stale cgroups too
			return nil, fmt.Errorf("sandbox: create parent cgroup: %w", err)
		}
		s.parents = true
	}
	cg, err := s.makeLocked(cfg)
	if err != nil {
		return nil, err
	}
	s.live++
	return cg, nil
}

// refillLocked schedules a spare for key unless there is one (or one is on
// its way).
func (s *cgroupSys) refillLocked(key cgKey, cfg Config) {
	if s.refilling[key] || s.spares[key] != nil || len(s.spares) >= maxSpares {
		return
	}
	if s.refilling == nil {
		s.refilling = map[cgKey]bool{}
		s.spares = map[cgKey]*cgroup{}
	}
	s.refilling[key] = true
	time.AfterFunc(spareDelay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.refilling, key)
		if !s.parents || s.spares[key] != nil || len(s.spares) >= maxSpares {
			return
		}
		if cg, err := s.makeLocked(&cfg); err == nil {
			s.spares[key] = cg
		}
	})
}

// makeLocked makes a new cgroup with the limits of cfg.
func (s *cgroupSys) makeLocked(cfg *Config) (*cgroup, error) {
	name := fmt.Sprintf("i-%d-%d", os.Getpid(), instanceSeq.Add(1))
	cg := &cgroup{sys: s, dirs: map[string]string{}}
	mk := func(ctrl, parent string) error {
		dir := filepath.Join(parent, name)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrNotExist) {
			// Another Nimbus process removed the shared parent; make it again.
			if err = s.ensureParents(); err == nil {
				err = os.Mkdir(dir, 0o755)
			}
		}
		if err != nil {
			return err
		}
		cg.dirs[ctrl] = dir
		return nil
	}
	var err error
	if s.v2 != "" {
		err = mk("", s.v2)
	} else {
		for c, parent := range s.v1 {
			if c == "cpu" && cfg.CPUs <= 0 {
				// Without a quota a cpu group only changes how the kernel
				// shares the CPU (all instances together would weigh as
				// much as one server thread), and costs a directory.
				continue
			}
			if err = mk(c, parent); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = cg.limit(cfg)
	}
	if err != nil {
		cg.rmdirs()
		return nil, fmt.Errorf("sandbox: create cgroup %s: %w", name, err)
	}
	return cg, nil
}

func (cg *cgroup) write(ctrl, file, val string) error {
	dir, ok := cg.dirs[ctrl]
	if cg.sys.v2 != "" {
		dir, ok = cg.dirs[""]
	}
	if !ok {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		return fmt.Errorf("write %s=%s: %w", file, val, err)
	}
	return nil
}

func (cg *cgroup) limit(cfg *Config) error {
	pids := cfg.Pids
	if pids <= 0 {
		pids = DefaultPids
	}
	if err := cg.write("pids", "pids.max", strconv.Itoa(pids)); err != nil {
		return err
	}
	if cg.sys.v2 != "" {
		if cfg.MemoryMB > 0 && cg.sys.has("memory") {
			if err := cg.write("", "memory.max", strconv.Itoa(cfg.MemoryMB<<20)); err != nil {
				return err
			}
			_ = cg.write("", "memory.swap.max", "0") // absent without swap accounting
		}
		if cfg.CPUs > 0 && cg.sys.has("cpu") {
			return cg.write("", "cpu.max", fmt.Sprintf("%d 100000", max(1000, int(cfg.CPUs*100000))))
		}
		return nil
	}
	if cfg.MemoryMB > 0 {
		b := strconv.Itoa(cfg.MemoryMB << 20)
		if err := cg.write("memory", "memory.limit_in_bytes", b); err != nil {
			return err
		}
		_ = cg.write("memory", "memory.memsw.limit_in_bytes", b) // absent without swap accounting
	}
	if cfg.CPUs > 0 {
		if err := cg.write("cpu", "cpu.cfs_period_us", "100000"); err != nil {
			return err
		}
		return cg.write("cpu", "cpu.cfs_quota_us", strconv.Itoa(max(1000, int(cfg.CPUs*100000))))
	}
	return nil
}

// fd opens the v2 directory for SysProcAttr.CgroupFD; -1 on v1.
func (cg *cgroup) fd() (int, error) {
	if cg.sys.v2 == "" {
		return -1, nil
	}
	return unix.Open(cg.dirs[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// join moves pid into the cgroup (every v1 controller's directory).
func (cg *cgroup) join(pid int) error {
	for c := range cg.dirs {
		if err := cg.write(c, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join %s cgroup: %w", c, err)
		}
	}
	return nil
}

// enterThread moves the calling OS thread (v1: every controller's tasks
// file) into the cgroup, so that a child it forks is born there; back moves
// it to where it was. The caller must hold the thread locked, and must not
// let Go run anything else on it while it is inside (nor after a failed
// back).
func (cg *cgroup) enterThread() (back func() error, err error) {
	tid := strconv.Itoa(unix.Gettid())
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	home := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if m, ok := cg.sys.mount[c]; ok {
				home[c] = filepath.Join(m, parts[2])
			}
		}
	}
	var moved []string
	back = func() error {
		var first error
		for _, c := range moved {
			if err := os.WriteFile(filepath.Join(home[c], "tasks"), []byte(tid), 0); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for c, d := range cg.dirs {
		if home[c] == "" {
			return back, fmt.Errorf("no %s cgroup of our own in /proc/thread-self/cgroup", c)
		}
		if err := os.WriteFile(filepath.Join(d, "tasks"), []byte(tid), 0); err != nil {
			return back, err
		}
		moved = append(moved, c)
	}
	return back, nil
}

// oomKills reports how many processes the kernel OOM-killed in this cgroup.
func (cg *cgroup) oomKills() int {
	var file string
	if cg.sys.v2 != "" {
		file = filepath.Join(cg.dirs[""], "memory.events")
	} else if d, ok := cg.dirs["memory"]; ok {
		file = filepath.Join(d, "memory.oom_control")
	} else {
		return 0
	}
	b, _ := os.ReadFile(file)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// procsDir is the directory whose cgroup.procs lists every process of the
// instance.
func (cg *cgroup) procsDir() string {
	if cg.sys.v2 != "" {
		return cg.dirs[""]
	}
	for _, c := range []string{"pids", "freezer", "memory", "cpu"} {
		if d, ok := cg.dirs[c]; ok {
			return d
		}
	}
	return ""
}

func (cg *cgroup) procs() []int {
	d := cg.procsDir()
	if d == "" {
		return nil
	}
	b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// killAll kills every process in the cgroup: cgroup.kill on v2; on v1 the
// cgroup is frozen (when the freezer is there) so that nothing forks while
// its members are killed one by one.
func (cg *cgroup) killAll() {
	if cg.sys.v2 != "" {
		if cg.write("", "cgroup.kill", "1") == nil {
			return
		}
	}
	frozen := false
	if _, ok := cg.dirs["freezer"]; ok && cg.write("freezer", "freezer.state", "FROZEN") == nil {
		frozen = true
		deadline := time.Now().Add(time.Second)
		for readString(filepath.Join(cg.dirs["freezer"], "freezer.state")) != "FROZEN" && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	for range 100 {
		pids := cg.procs()
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if frozen {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if frozen {
		_ = cg.write("freezer", "freezer.state", "THAWED")
	}
}

// remove waits until the cgroup is empty (after killAll) and removes it.
func (cg *cgroup) remove() error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 100 * time.Microsecond; len(cg.procs()) > 0; wait = min(wait*2, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox: cgroup %s still has processes %v", cg.procsDir(), cg.procs())
		}
		cg.killAll()
		time.Sleep(wait)
	}
	var err error
	for wait := 100 * time.Microsecond; ; wait = min(wait*2, 20*time.Millisecond) {
		if err = cg.rmdirs(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(wait)
	}
	s := cg.sys
	s.mu.Lock()
	s.live--
	if s.live == 0 {
		if s.idle == nil {
			s.idle = time.AfterFunc(SpareLinger, s.dropIdle)
		} else {
			s.idle.Reset(SpareLinger)
		}
	}
	s.mu.Unlock()
	return err
}

// dropIdle removes the spares and the parents when no instance ran for
// SpareLinger: an idle server leaves nothing in its own cgroup.
func (s *cgroupSys) dropIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live > 0 {
		return
	}
	for k, sp := range s.spares {
		sp.rmdirs()
		delete(s.spares, k)
	}
	// Another Nimbus process still using the parent keeps it (rmdir fails:
	// EBUSY); it is made again on the next start here.
	if s.v2 != "" {
		syscall.Rmdir(s.v2)
	}
	for _, d := range s.v1 {
		syscall.Rmdir(d)
	}
	s.parents = false
}

// ReleaseIdle removes the spare cgroups and the parent now if no instance
// of this process runs (a server stopping), rather than SpareLinger later.
func ReleaseIdle() {
	if pr := probed(); pr.cg != nil {
		pr.cg.dropIdle()
	}
}

// SpareCgroups lists the directories of the spare cgroups made ahead (for
// tests that check what instances leave behind).
func SpareCgroups() []string {
	pr := probed()
	if pr.cg == nil {
		return nil
	}
	s := pr.cg
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sp := range s.spares {
		for _, d := range sp.dirs {
			out = append(out, d)
		}
	}
	return out
}

func (cg *cgroup) rmdirs() error {
	var first error
	for c, d := range cg.dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			if first == nil {
				first = fmt.Errorf("sandbox: remove cgroup %s: %w", d, err)
			}
			continue
		}
		delete(cg.dirs, c)
	}
	return first
}

func readString(file string) string {
	b, _ := os.ReadFile(file)
	return strings.TrimSpace(string(b))
}

// probeCgroups finds a writable cgroup hierarchy: v2 when it carries the memory
// or pids controller, else v1 controllers one by one.
func probeCgroups() (*cgroupSys, []Layer) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, []Layer{{Name: "cgroup", Detail: "cannot read /proc/self/mountinfo: " + err.Error()}}
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	ownV2 := ""
	ownV1 := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			ownV2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			ownV1[c] = parts[2]
		}
	}
	v2Mount := ""
	v1Mounts := map[string]string{}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 || len(f) < 5 {
			continue
		}
		switch f[sep+1] {
		case "cgroup2":
			v2Mount = f[4]
		case "cgroup":
			for _, o := range strings.Split(f[sep+3], ",") {
				switch o {
				case "memory", "pids", "cpu", "freezer":
					v1Mounts[o] = f[4]
				}
			}
		}
	}

	if v2Mount != "" {
		ctrls := " " + readString(filepath.Join(v2Mount, "cgroup.controllers")) + " "
		if strings.Contains(ctrls, " memory ") || strings.Contains(ctrls, " pids ") {
			if s, layers, ok := probeV2(v2Mount, ownV2); ok {
				return s, layers
			}
		}
	}
	s := &cgroupSys{v1: map[string]string{}, mount: map[string]string{}}
	var layers []Layer
	var found, missing []string
	for _, c := range []string{"memory", "pids", "cpu", "freezer"} {
		m, ok := v1Mounts[c]
		if !ok {
			missing = append(missing, c+" (not mounted)")
			continue
		}
		parent := filepath.Join(m, ownV1[c], parentName)
		if err := tryCgroup(parent); err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", c, err))
			continue
		}
		s.v1[c] = parent
		s.mount[c] = m
		found = append(found, c)
	}
	if len(found) == 0 {
		return nil, []Layer{{Name: "cgroup", Detail: "no writable cgroup controller: " + strings.Join(missing, ", ")}}
	}
	s.detail = "v1 " + strings.Join(found, ", ")
	if len(missing) > 0 {
		s.detail += "; missing: " + strings.Join(missing, ", ")
	}
	layers = append(layers, Layer{Name: "cgroup", Available: true, Detail: s.detail})
	layers = append(layers, limitLayers(s)...)
	return s, layers
}

func limitLayers(s *cgroupSys) []Layer {
	var out []Layer
	for _, l := range []struct{ name, ctrl string }{{"memory limit", "memory"}, {"pids limit", "pids"}, {"cpu limit", "cpu"}} {
		ok := s.has(l.ctrl)
		d := "cgroup " + l.ctrl + " controller"
		if !ok {
			d = "no writable cgroup " + l.ctrl + " controller"
		}
		out = append(out, Layer{Name: l.name, Available: ok, Detail: d})
	}
	return out
}

// tryCgroup checks that a child of parent can be made and limited.
func tryCgroup(parent string) error {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	probe := filepath.Join(parent, fmt.Sprintf("probe-%d", os.Getpid()))
	defer func() {
		syscall.Rmdir(probe)
		syscall.Rmdir(parent) // made again by the first instance
	}()
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if _, err := os.Stat(filepath.Join(probe, "cgroup.procs")); err != nil {
		return err
	}
	return nil
}

func probeV2(mount, own string) (*cgroupSys, []Layer, bool) {
	// Prefer a child of our own cgroup; v2 forbids controllers on a cgroup that
	// holds processes (other than the root), so fall back to the root.
	for _, base := range []string{filepath.Join(mount, own), mount} {
		s := &cgroupSys{v2: filepath.Join(base, parentName)}
		if base != mount {
			ctrls := readString(filepath.Join(base, "cgroup.controllers"))
			var enable []string
			for _, c := range strings.Fields(ctrls) {
				if c == "memory" || c == "pids" || c == "cpu" {
					enable = append(enable, "+"+c)
				}
			}
			if os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0) != nil {
				continue
			}
		}
		if err := s.ensureParents(); err != nil {
			syscall.Rmdir(s.v2)
			continue
		}
		if err := tryCgroup(s.v2); err != nil {
			continue
		}
		s.detail = "v2 at " + s.v2 + " (" + readString(filepath.Join(mount, "cgroup.controllers")) + ")"
		layers := []Layer{{Name: "cgroup", Available: true, Detail: s.detail}}
		// ensureParents again so that has() can read subtree_control.
		_ = s.ensureParents()
		layers = append(layers, limitLayers(s)...)
		syscall.Rmdir(s.v2)
		return s, layers, true
	}
	return nil, nil, false
}
