//go:build linux

package sandbox

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Layer is one isolation layer and whether this machine gives it.
type Layer struct {
	Name      string
	Available bool
	// Detail says what is used, or why the layer is missing.
	Detail string
}

// Report lists the isolation layers instances get on this machine.
type Report struct {
	Layers []Layer
}

// Has reports whether the named layer is available.
func (r Report) Has(name string) bool {
	for _, l := range r.Layers {
		if l.Name == name {
			return l.Available
		}
	}
	return false
}

// String is one line per layer, for `nimbus doctor` and the start-up log.
func (r Report) String() string {
	var b strings.Builder
	b.WriteString("process sandbox:\n")
	for _, l := range r.Layers {
		mark := "yes"
		if !l.Available {
			mark = "NO "
		}
		fmt.Fprintf(&b, "  [%s] %-18s %s\n", mark, l.Name, l.Detail)
	}
	return b.String()
}

// SandboxUID and SandboxGID are the unprivileged ids instances run as when the
// server runs as root (nobody/nogroup).
const (
	SandboxUID = 65534
	SandboxGID = 65534
)

// DefaultPids is the process/thread cap of an instance when Config.Pids is 0.
const DefaultPids = 256

type probeResult struct {
	report Report
	cg     *cgroupSys
	root   bool
	// prlimitDirect: we may set the child's rlimits (same uid, or
	// CAP_SYS_RESOURCE). Else prlimitBin, when found, wraps the command.
	prlimitDirect bool
	prlimitBin    string
	// inside: otherwise the process, stopped at exec, is made to set its
	// own limits (see setRlimitsInside); rlimitFallback is the layer when
	// that is off (no ptrace, or it failed once).
	inside         bool
	rlimitFallback Layer
}

var (
	probed = sync.OnceValue(doProbe)
	// Layers found broken at start time (after the probe) are switched off once.
	nsOff     atomic.Bool
	ptraceOff atomic.Bool
	insideOff atomic.Bool
	fsOff     atomic.Bool
	logger    = slog.With("component", "sandbox")
)

// Probe detects (once) which isolation layers are available.
func Probe() Report {
	pr := probed()
	out := Report{Layers: append([]Layer(nil), pr.report.Layers...)}
	for i := range out.Layers {
		switch {
		case out.Layers[i].Name == "namespaces" && nsOff.Load():
			out.Layers[i] = Layer{Name: "namespaces", Detail: "refused by the kernel at start; instances share the server's namespaces"}
		case out.Layers[i].Name == "rlimits" && pr.inside && (ptraceOff.Load() || insideOff.Load()):
			out.Layers[i] = pr.rlimitFallback
		case out.Layers[i].Name == "file system" && out.Layers[i].Available && (nsOff.Load() || ptraceOff.Load() || fsOff.Load()):
			out.Layers[i] = fsFallback
		case out.Layers[i].Name == "rlimits" && pr.prlimitDirect && ptraceOff.Load():
			out.Layers[i].Detail = "set just after start (ptrace refused): nofile, nproc, core=0"
		}
	}
	return out
}

func doProbe() probeResult {
	pr := probeResult{root: os.Geteuid() == 0}
	cg, layers := probeCgroups()
	pr.cg = cg
	r := &pr.report
	r.Layers = append(r.Layers, layers...)
	if cg == nil {
		r.Layers = append(r.Layers,
			Layer{Name: "memory limit", Detail: "no cgroup"},
			Layer{Name: "pids limit", Detail: "no cgroup; RLIMIT_NPROC is the only fork bound"},
			Layer{Name: "cpu limit", Detail: "no cgroup"})
	}
	if pr.root {
		r.Layers = append(r.Layers,
			Layer{Name: "namespaces", Available: true, Detail: "new mount, pid, ipc and uts namespaces per instance (network shared: instances listen on loopback)"},
			Layer{Name: "unprivileged user", Available: true, Detail: fmt.Sprintf("uid %d, gid %d, no supplementary groups", SandboxUID, SandboxGID)})
	} else {
		r.Layers = append(r.Layers,
			Layer{Name: "namespaces", Detail: "server is not root: instances share its namespaces"},
			Layer{Name: "unprivileged user", Detail: fmt.Sprintf("server is not root: instances run as the server's uid %d", os.Geteuid())})
	}
	rl := Layer{Name: "rlimits", Available: true, Detail: "nofile, nproc, core=0, set while the process is stopped at exec"}
	pr.prlimitDirect = !pr.root || hasCap(capSysResource)
	if !pr.prlimitDirect {
		for _, b := range []string{"/usr/bin/prlimit", "/bin/prlimit"} {
			if checkExec(b, "prlimit") == nil {
				pr.prlimitBin = b
				break
			}
		}
		if pr.prlimitBin != "" {
			pr.rlimitFallback = Layer{Name: "rlimits", Available: true, Detail: "nofile, nproc, core=0, set by " + pr.prlimitBin + " before the command runs (no CAP_SYS_RESOURCE to set them from outside)"}
		} else {
			pr.rlimitFallback = Layer{Name: "rlimits", Detail: "no CAP_SYS_RESOURCE and no prlimit(1): instances inherit the server's limits"}
		}
		rl = pr.rlimitFallback
		if pr.inside = canInject; pr.inside {
			rl.Available = true
			rl.Detail = "nofile, nproc, core=0, set by the process on itself while stopped at exec (no CAP_SYS_RESOURCE to set them from outside)"
		}
	}
	r.Layers = append(r.Layers, rl,
		Layer{Name: "process group", Available: true, Detail: "own process group, killed as a whole"},
		Layer{Name: "environment", Available: true, Detail: "only the function's configured variables"},
		Layer{Name: "private temp dir", Available: true, Detail: "per instance, in TMPDIR, removed on kill"})
	if pr.root {
		r.Layers = append(r.Layers, Layer{Name: "file system", Available: true,
			Detail: "every mount read-only and nosuid in the instance's mount namespace; its private temp dir, at /tmp (code kept there stays visible, read-only), /var/tmp and /dev/shm, is the only writable path; host files stay readable where their permissions allow"})
	} else {
		r.Layers = append(r.Layers, Layer{Name: "file system", Detail: "shared with the server: instances may write wherever the server's user can"})
	}
	return pr
}

// fsFallback is the file system layer when the private view cannot be set up.
var fsFallback = Layer{Name: "file system", Detail: "shared with the host (no mount namespace or ptrace stop to set up a read-only view): the code dir is read-only and the temp dir is the only path the sandbox user owns"}

const capSysResource = 24

// hasCap reports whether the capability is in our effective set.
func hasCap(c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<c) != 0
		}
	}
	return false
}
