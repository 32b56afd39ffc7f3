//go:build linux && !amd64

package sandbox

import (
	"errors"

	"golang.org/x/sys/unix"
)

const canInject = false

func setRlimitsInside(int, []int, []unix.Rlimit) error {
	return errors.New("not supported on this architecture")
}
