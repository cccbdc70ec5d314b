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
