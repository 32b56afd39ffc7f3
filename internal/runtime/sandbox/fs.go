//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// privateTmp is $TMPDIR (and $HOME by default) inside a private file
// system whose /tmp is the instance's own temp dir.
const privateTmp = "/tmp"

// tmpKeeps returns the entries of the host's /tmp that an instance must
// still see once its temp dir replaces /tmp: the top-level directory of each
// given path under /tmp (its code or command, when the data dir is there, as
// in tests or when code is moved where the sandbox user can read it). ok is
// false when a path is /tmp itself, which keeps the host's /tmp (read-only;
// the instance writes in $TMPDIR).
func tmpKeeps(paths ...string) (keep []string, ok bool) {
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			continue
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		rest, under := strings.CutPrefix(filepath.Clean(p), privateTmp+"/")
		if filepath.Clean(p) == privateTmp {
			return nil, false
		}
		if !under {
			continue
		}
		top, _, _ := strings.Cut(rest, "/")
		k := privateTmp + "/" + top
		if !slices.Contains(keep, k) {
			keep = append(keep, k)
		}
	}
	return keep, true
}

// privateFS gives the process pid, stopped at exec in its own mount
// namespace (which Go made recursively private, so nothing propagates back
// to the host), a read-only, nosuid view of every mount, with tmp bound
// read-write (nosuid, nodev) at /var/tmp, /dev/shm and at /tmp (maskTmp; the
// keep dirs of the host's /tmp are mounted back into it, read-only) or at
// its own path: the only places it can write. Device nodes such as
// /dev/null stay writable: a read-only mount does not block them.
//
// The working directory is the code dir entered through the server's
// descriptor (see Start), so it stays on the host's mount: that is safe
// because Nimbus unpacks code root-owned with modes 0755/0644, which the
// sandbox user cannot write either.
//
// The work happens on an OS thread that enters the namespace and is never
// handed back to Go's scheduler (its goroutine ends locked, so the thread
// ends too): the server's other threads keep the host's view. Ending a
// thread is safe because instances are forked only on spawner threads,
// which never end (spawner.go).
//
// It returns at once; the result arrives on the channel.
func privateFS(pid int, tmp string, maskTmp bool, keep []string) <-chan error {
	at := []string{"/var/tmp", "/dev/shm", tmp}
	if maskTmp {
		at[2] = privateTmp // last: tmp itself lives under the host's /tmp
	} else {
		keep = nil
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Go never ends the main thread (it would stay in the instance's
			// namespace, and /proc/self is its view): work on another one,
			// which holding this one keeps off the main thread meanwhile.
			inner := make(chan error, 1)
			go func() {
				goruntime.LockOSThread()
				inner <- enterAndMount(pid, tmp, at, keep)
			}()
			errc <- <-inner
			goruntime.UnlockOSThread()
			return
		}
		errc <- enterAndMount(pid, tmp, at, keep)
	}()
	return errc
}

func enterAndMount(pid int, tmp string, targets, keep []string) error {
	// setns into a mount namespace needs a thread that shares no fs state.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mount namespace: %w", err)
	}
	err = unix.Setns(fd, unix.CLONE_NEWNS)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("enter mount namespace: %w", err)
	}
	// From here paths resolve in the instance's namespace (setns moved this
	// thread's root and cwd to its root).
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE,
		&unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID}); err != nil {
		return fmt.Errorf("make the file system read-only: %w", err)
	}
	// Detached copies of what must stay visible under /tmp, taken before
	// the temp dir hides it.
	trees := make([]int, 0, len(keep))
	defer func() {
		for _, t := range trees {
			unix.Close(t)
		}
	}()
	for _, k := range keep {
		t, err := unix.OpenTree(unix.AT_FDCWD, k, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return fmt.Errorf("keep %s: %w", k, err)
		}
		trees = append(trees, t)
	}
	for _, at := range targets {
		if fi, err := os.Stat(at); err != nil || !fi.IsDir() {
			continue // not on this machine
		}
		if err := unix.Mount(tmp, at, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount the temp dir at %s: %w", at, err)
		}
		// The bind copied the read-only flag of the mount tmp sits on.
		if err := unix.MountSetattr(unix.AT_FDCWD, at, 0, &unix.MountAttr{
			Attr_clr: unix.MOUNT_ATTR_RDONLY,
			Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		}); err != nil {
			return fmt.Errorf("make %s writable: %w", at, err)
		}
	}
	for i, k := range keep {
		// The mount point is a root-owned dir in the instance's temp dir,
		// which it cannot remove while the mount is on it.
		if err := os.Mkdir(k, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("keep %s: %w", k, err)
		}
		if err := unix.MoveMount(trees[i], "", unix.AT_FDCWD, k, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("keep %s: %w", k, err)
		}
	}
	return nil
}

// fsError is a failure to set up the private file system, after which
// starts go on without it (logged once, reported by Probe).
type fsError struct{ err error }

func (e *fsError) Error() string { return "private file system: " + e.err.Error() }
func (e *fsError) Unwrap() error { return e.err }
