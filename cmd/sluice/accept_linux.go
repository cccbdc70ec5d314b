package main

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// acceptFd accepts the next connection of the listener behind rc as a bare,
// non-blocking, close-on-exec descriptor, waiting through the runtime
// poller while none is queued. Package net's accept would also register the
// socket with the poller, read its local address, set TCP_NODELAY (which
// the socket inherits from its listener here) and allocate a netFD with a
// finalizer: five system calls per connection with the takeover at the end.
func acceptFd(rc syscall.RawConn) (*client, error) {
	var (
		nfd  int
		peer netip.AddrPort
		aerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		for {
			nfd, peer, aerr = accept4(int(fd))
			switch aerr {
			case unix.EINTR, unix.ECONNABORTED:
				continue // as package net: the next one
			case unix.EAGAIN:
				return false
			}
			return true
		}
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, os.NewSyscallError("accept4", aerr)
	}
	return &client{fd: nfd, peer: peer}, nil
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
	var peer netip.AddrPort
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		peer = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		peer = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return int(r), peer, nil
}
