//go:build linux && amd64

package sandbox

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// canInject says setRlimitsInside works on this architecture.
const canInject = true

// setRlimitsInside makes the traced process, stopped at exec before its
// first instruction, call prlimit64(0, res, &lim, NULL) on itself for each
// limit: lowering one's own limits needs no privilege, while setting another
// user's needs CAP_SYS_RESOURCE, which a server in a container often lacks.
// The process's registers and the code and stack bytes it borrows are put
// back before it runs. This saves starting prlimit(1) (a dynamically linked
// program: milliseconds) in front of every instance.
func setRlimitsInside(pid int, res []int, lims []unix.Rlimit) (err error) {
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &saved); err != nil {
		return fmt.Errorf("get registers: %w", err)
	}
	pc := uintptr(saved.Rip)
	// The limit goes below the red zone of the initial stack (exec maps at
	// least 128 KiB of stack below the arguments).
	scratch := (uintptr(saved.Rsp) - 256) &^ 15
	var code, stack [16]byte
	if _, err := unix.PtracePeekText(pid, pc, code[:8]); err != nil {
		return fmt.Errorf("read code: %w", err)
	}
	if _, err := unix.PtracePeekData(pid, scratch, stack[:]); err != nil {
		return fmt.Errorf("read stack: %w", err)
	}
	patched := code
	patched[0], patched[1] = 0x0f, 0x05 // syscall
	if _, err := unix.PtracePokeText(pid, pc, patched[:8]); err != nil {
		return fmt.Errorf("write code: %w", err)
	}
	defer func() {
		_, perr := unix.PtracePokeText(pid, pc, code[:8])
		_, serr := unix.PtracePokeData(pid, scratch, stack[:])
		rerr := unix.PtraceSetRegs(pid, &saved)
		for _, e := range []error{perr, serr, rerr} {
			if e != nil && err == nil {
				err = fmt.Errorf("restore: %w", e)
			}
		}
	}()
	for i, r := range res {
		var lim [16]byte
		binary.LittleEndian.PutUint64(lim[:8], lims[i].Cur)
		binary.LittleEndian.PutUint64(lim[8:], lims[i].Max)
		if _, err := unix.PtracePokeData(pid, scratch, lim[:]); err != nil {
			return fmt.Errorf("write limit: %w", err)
		}
		regs := saved
		regs.Rip = uint64(pc)
		regs.Rax = unix.SYS_PRLIMIT64
		regs.Orig_rax = ^uint64(0) // not in a system call: no restart
		regs.Rdi, regs.Rsi, regs.Rdx, regs.R10 = 0, uint64(r), uint64(scratch), 0
		if err := unix.PtraceSetRegs(pid, &regs); err != nil {
			return fmt.Errorf("set registers: %w", err)
		}
		if err := unix.PtraceSingleStep(pid); err != nil {
			return fmt.Errorf("step: %w", err)
		}
		if err := waitStop(pid); err != nil {
			return err
		}
		if err := unix.PtraceGetRegs(pid, &regs); err != nil {
			return fmt.Errorf("get registers: %w", err)
		}
		if regs.Rip != uint64(pc)+2 {
			return fmt.Errorf("step ended at %#x, not after the system call at %#x", regs.Rip, pc)
		}
		if rv := int64(regs.Rax); rv < 0 {
			return fmt.Errorf("rlimit %d: %w", r, syscall.Errno(-rv))
		}
	}
	return nil
}
