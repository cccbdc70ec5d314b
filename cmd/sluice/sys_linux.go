package main

import (
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// try is b.fn: one accept4 on the listener fd, for rc.Read, which calls it
// again once the poller says a connection is queued. Its results go to b,
// not to variables a closure would capture, so that accepting allocates
// nothing but the client (rawsys.Accept4 reads the peer's address in place,
// without the getsockopt(SO_PROTOCOL) x/sys/unix makes to decode an AF_INET
// one).
func (b *bareAccept) try(fd uintptr) bool {
	for {
		b.nfd, b.peer, b.err = rawsys.Accept4(int(fd))
		switch b.err {
		case unix.EINTR, unix.ECONNABORTED:
			continue // as package net: the next one
		case unix.EAGAIN:
			return false
		}
		return true
	}
}

// sysRead and sysWrite are syscall.Read and syscall.Write through
// RawSyscall (package rawsys), for a bare client socket (non-blocking:
// neither can block) and a fresh upstream's. With the handshake's read and
// reply raw, a session makes no system call on the default path that wakes
// the runtime's sysmon: under `sluice-bench rr -c 64`, relay alone on CPU 0,
// 0.007 nanosleep and 0.001 futex calls per connection instead of 0.14 and
// 0.014, and 0.94 to 0.95 times the CPU per connection (README, Benchmarks).
func sysRead(fd int, p []byte) (int, error) { return rawsys.Read(fd, p) }

func sysWrite(fd int, p []byte) (int, error) { return rawsys.Write(fd, p) }

// fdLocalAddrPort is a socket's own address, sent as BND in the success
// reply, read in place: syscall.Getsockname allocates the Sockaddr it
// returns.
func fdLocalAddrPort(fd int) netip.AddrPort { return rawsys.Getsockname(fd) }

// sysClose closes a bare socket.
func sysClose(fd int) error { return syscall.Close(fd) }

// sysLingerZero sets SO_LINGER 0 on fd: its close resets the peer.
func sysLingerZero(fd int) {
	syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
}

// dupCloexec duplicates fd, close-on-exec.
func dupCloexec(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// hungUp reports whether the peer of socket fd shut down its sending side,
// or the connection failed, even while received bytes wait to be read
// before the FIN (which a peeking recv cannot see past): poll's POLLRDHUP,
// without waiting. known is false when poll failed.
func hungUp(fd uintptr) (hung, known bool) {
	p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(p[:], 0)
	if err != nil {
		return false, false
	}
	return n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0, true
}

// monotonicMicros reads CLOCK_MONOTONIC in microseconds, the clock of
// sd_notify's MONOTONIC_USEC.
func monotonicMicros() (int64, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, false
	}
	return ts.Nano() / 1000, true
}
