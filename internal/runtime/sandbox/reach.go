//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Reachable reports whether the sandbox user can reach dir: every directory
// on its path must be searchable by that user (programs resolve paths of
// their own code, e.g. Node's require, so a private parent breaks them). Nil
// when instances run as the server's own user.
func Reachable(dir string) error {
	if !probed().root {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		m := fi.Mode().Perm()
		searchable := m&0o001 != 0 ||
			(st.Uid == SandboxUID && m&0o100 != 0) ||
			(st.Gid == SandboxGID && m&0o010 != 0)
		if !searchable {
			return fmt.Errorf("%s is not searchable by the sandbox user (uid %d): its mode is %v; make it world-searchable (chmod o+x) or use a directory outside it", p, SandboxUID, m)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// CodeRoot returns a directory for unpacked code that the sandbox user can
// reach: preferred (created 0755) when it is reachable, else
// $TMPDIR/nimbus-code-<uid>, which must be ours and not writable by others.
func CodeRoot(preferred string) (string, error) {
	if preferred != "" {
		if err := os.MkdirAll(preferred, 0o755); err != nil {
			return "", fmt.Errorf("sandbox: create code dir: %w", err)
		}
		if Reachable(preferred) == nil {
			return preferred, nil
		}
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("nimbus-code-%d", os.Geteuid()))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("sandbox: create code dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("sandbox: code dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("sandbox: code dir %s is not a directory owned by uid %d and closed to other writers; remove it", dir, os.Geteuid())
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("sandbox: code dir: %w", err)
	}
	if err := Reachable(dir); err != nil {
		return "", fmt.Errorf("sandbox: no code dir the sandbox user can reach: %w", err)
	}
	return dir, nil
}
