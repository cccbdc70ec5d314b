package main

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// try is b.fn: one accept4 on the listener fd, for rc.Read, which calls it
// again once the poller says a connection is queued. Its results go to b,
// not to variables a closure would capture, so that accepting allocates
// nothing but the client.
func (b *bareAccept) try(fd uintptr) bool {
	for {
		b.nfd, b.peer, b.err = accept4(int(fd))
		switch b.err {
		case unix.EINTR, unix.ECONNABORTED:
			continue // as package net: the next one
		case unix.EAGAIN:
			return false
		}
		return true
	}
}

// accept4 is unix.Accept4 with the peer's address read in place: no
// allocation, and none of the getsockopt(SO_PROTOCOL) x/sys/unix makes to
// decode an AF_INET address. It goes through RawSyscall: the listener is
// non-blocking.
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawAddrPort(&rsa), nil
}

// sysRead and sysWrite are syscall.Read and syscall.Write through
// RawSyscall, for a bare client socket (non-blocking: neither can block) and
// a fresh upstream's. A system call made the other way tells the runtime,
// and entering one wakes sysmon from its deep sleep whenever the process had
// gone idle; sysmon then polls every 20 µs for a millisecond or more, each
// time a timer and two context switches on the relay's CPU. With the
// handshake's read and reply raw, a session makes no such call on the
// default path: under `sluice-bench rr -c 64`, relay alone on CPU 0, 0.01
// nanosleep and 0.001 futex calls per connection instead of 0.14 and 0.014,
// and 0.94 to 0.95 times the CPU per connection (README, Benchmarks).
func sysRead(fd int, p []byte) (int, error) {
	return rawRW(unix.SYS_READ, fd, p)
}

func sysWrite(fd int, p []byte) (int, error) {
	return rawRW(unix.SYS_WRITE, fd, p)
}

func rawRW(trap uintptr, fd int, p []byte) (int, error) {
	var b unsafe.Pointer
	if len(p) > 0 {
		b = unsafe.Pointer(&p[0])
	}
	r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(b), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// fdLocalAddrPort is a socket's own address, sent as BND in the success
// reply, read in place: syscall.Getsockname allocates the Sockaddr it
// returns.
func fdLocalAddrPort(fd int) netip.AddrPort {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n))); e != 0 {
		return netip.AddrPort{}
	}
	return rawAddrPort(&rsa)
}

// rawAddrPort decodes an AF_INET or AF_INET6 socket address; any other
// family gives the zero AddrPort.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}
