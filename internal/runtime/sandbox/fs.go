//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// privateTmp is $TMPDIR (and $HOME by default) inside a private file
// system whose /tmp is the instance's own temp dir.
const privateTmp = "/tmp"

// masksTmp reports whether an instance's /tmp may be replaced by its temp
// dir: not when its code or command lives under the host's /tmp (a data dir
// there, as in tests), which that would hide. Such an instance keeps the
// host's /tmp, read-only, and writes in $TMPDIR.
func masksTmp(paths ...string) bool {
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			continue
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if p == privateTmp || strings.HasPrefix(p, privateTmp+"/") {
			return false
		}
	}
	return true
}

// privateFS gives the process pid, stopped at exec in its own mount
// namespace (which Go made recursively private, so nothing propagates back
// to the host), a read-only, nosuid view of every mount, with tmp bound
// read-write (nosuid, nodev) at /var/tmp, /dev/shm and at /tmp (maskTmp) or
// its own path: the only places it can write. Device nodes such as
// /dev/null stay writable: a read-only mount does not block them.
//
// The working directory is the code dir entered through the server's
// descriptor (see Start), so it stays on the host's mount: that is safe
// because Nimbus unpacks code root-owned with modes 0755/0644, which the
// sandbox user cannot write either.
//
// The work happens on a fresh OS thread that enters the namespace and is
// never handed back to Go's scheduler (its goroutine ends locked, so the
// thread ends too): the server's other threads keep the host's view.
//
// It returns at once; the result arrives on the channel.
func privateFS(pid int, tmp string, maskTmp bool) <-chan error {
	at := []string{"/var/tmp", "/dev/shm", tmp}
	if maskTmp {
		at[2] = privateTmp // last: tmp itself lives under the host's /tmp
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
				inner <- enterAndMount(pid, tmp, at)
			}()
			errc <- <-inner
			goruntime.UnlockOSThread()
			return
		}
		errc <- enterAndMount(pid, tmp, at)
	}()
	return errc
}

func enterAndMount(pid int, tmp string, targets []string) error {
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
	return nil
}

// fsError is a failure to set up the private file system, after which
// starts go on without it (logged once, reported by Probe).
type fsError struct{ err error }

func (e *fsError) Error() string { return "private file system: " + e.err.Error() }
func (e *fsError) Unwrap() error { return e.err }
