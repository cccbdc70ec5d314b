package tune

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Classic BPF ancillary load of the current CPU (linux/filter.h).
const (
	skfAdOff = 0xfffff000 // SKF_AD_OFF, -0x1000 as a K operand
	skfAdCPU = 36
)

// AttachCPUSteering makes the kernel hand each new connection to the
// listener whose accept loop runs on the CPU that processes the connection's
// SYN, so that with one accept loop pinned per CPU a connection is accepted
// on the CPU where its packets arrive. cpus[i] is the CPU of ls[i]'s loop;
// nil means ls[i] runs on CPU i. A SYN processed on a CPU not in cpus goes to
// the listener at that CPU's number modulo len(ls). It attaches a classic BPF
// program (SO_ATTACH_REUSEPORT_CBPF) to the port's SO_REUSEPORT group; ls
// must be all the listeners of one Listen call, in its order, since the
// kernel counts sockets in the order they joined the group. Closing a
// listener reorders the group, so steer again or not at all after that.
func AttachCPUSteering(ls []*net.TCPListener, cpus []int) error {
	if len(ls) == 0 || (cpus != nil && len(cpus) != len(ls)) || 2*len(cpus)+3 > unix.BPF_MAXINSNS {
		return fmt.Errorf("tune: SO_ATTACH_REUSEPORT_CBPF: %w", unix.EINVAL)
	}
	for _, cpu := range cpus {
		if cpu < 0 {
			return fmt.Errorf("tune: SO_ATTACH_REUSEPORT_CBPF: CPU %d: %w", cpu, unix.EINVAL)
		}
	}
	prog := make([]unix.SockFilter, 0, 2*len(cpus)+3)
	prog = append(prog, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdCPU}) // A = cpu
	for i, cpu := range cpus {
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(cpu), Jf: 1}, // A == cpu?
			unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(i)})                         // then listener i
	}
	prog = append(prog,
		unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(ls))}, // A %= len(ls)
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_A})                                    // return A
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	rc, err := ls[0].SyscallConn()
	if err != nil {
		return fmt.Errorf("tune: SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	err = rawControl(rc, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	})
	if err != nil {
		return fmt.Errorf("tune: SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}
