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
	// Code and limits go at the entry point, written through /proc/PID/mem
	// (which, for the tracer, writes read-only pages too): a few system calls
	// rather than one ptrace call per word.
	blob, codeLen := rlimitCode(res, lims, pc)
	mem, err := unix.Open(fmt.Sprintf("/proc/%d/mem", pid), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open memory: %w", err)
	}
	defer unix.Close(mem)
	orig := make([]byte, len(blob))
	if n, err := unix.Pread(mem, orig, int64(pc)); err != nil || n != len(orig) {
		return fmt.Errorf("read code: %d bytes, %v", n, err)
	}
	if n, err := unix.Pwrite(mem, blob, int64(pc)); err != nil || n != len(blob) {
		if n > 0 {
			unix.Pwrite(mem, orig[:n], int64(pc))
		}
		return fmt.Errorf("write code: %d bytes, %v", n, err)
	}
	defer func() {
		n, perr := unix.Pwrite(mem, orig, int64(pc))
		if perr == nil && n != len(orig) {
			perr = fmt.Errorf("%d of %d bytes", n, len(orig))
		}
		rerr := unix.PtraceSetRegs(pid, &saved)
		for _, e := range []error{perr, rerr} {
			if e != nil && err == nil {
				err = fmt.Errorf("restore: %w", e)
			}
		}
	}()
	// Run it to its breakpoint: one stop for all the limits.
	if err := unix.PtraceCont(pid, 0); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if err := waitStop(pid); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &regs); err != nil {
		return fmt.Errorf("get registers: %w", err)
	}
	if end := uint64(pc) + uint64(codeLen); regs.Rip != end {
		return fmt.Errorf("stopped at %#x, not at the end of the injected code %#x", regs.Rip, end)
	}
	if rv := int64(regs.Rax); rv < 0 {
		return fmt.Errorf("prlimit64: %w", syscall.Errno(-rv))
	}
	return nil
}

// rlimitCode is amd64 machine code, to be placed at pc, that calls
// prlimit64(0, res[i], &lims[i], NULL) for each i, stops at the first
// failure, and ends with a breakpoint (int3) with the last result in rax;
// the limits follow the code. codeLen is where the breakpoint stops.
func rlimitCode(res []int, lims []unix.Rlimit, pc uintptr) (blob []byte, codeLen int) {
	var c []byte
	le32 := func(v uint32) { c = binary.LittleEndian.AppendUint32(c, v) }
	var addrs, exits []int // offsets of the limit addresses and js displacements
	for _, r := range res {
		c = append(c, 0xb8) // mov eax, SYS_prlimit64
		le32(unix.SYS_PRLIMIT64)
		c = append(c, 0x31, 0xff) // xor edi, edi
		c = append(c, 0xbe)       // mov esi, resource
		le32(uint32(r))
		c = append(c, 0x48, 0xba) // mov rdx, imm64 (the limit's address)
		addrs = append(addrs, len(c))
		c = append(c, make([]byte, 8)...)
		c = append(c, 0x45, 0x31, 0xd2) // xor r10d, r10d
		c = append(c, 0x0f, 0x05)       // syscall
		c = append(c, 0x48, 0x85, 0xc0) // test rax, rax
		c = append(c, 0x78, 0)          // js end
		exits = append(exits, len(c)-1)
	}
	end := len(c)
	c = append(c, 0xcc) // int3
	for _, at := range exits {
		c[at] = byte(end - (at + 1))
	}
	for i, l := range lims {
		binary.LittleEndian.PutUint64(c[addrs[i]:], uint64(pc)+uint64(len(c)))
		c = binary.LittleEndian.AppendUint64(c, l.Cur)
		c = binary.LittleEndian.AppendUint64(c, l.Max)
	}
	return c, end + 1
}
