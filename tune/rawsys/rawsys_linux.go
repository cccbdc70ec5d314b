package rawsys

import (
	"net"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sockaddr is room for an AF_INET or AF_INET6 socket address, in the
// kernel's layout: what Set fills for connect and sendmmsg, and what accept4,
// getsockname and recvmmsg fill for AddrPort to read.
type Sockaddr struct {
	raw unix.RawSockaddrInet6 // large enough for IPv4 too
}

// SizeofSockaddr is a Sockaddr's size, the length to give the kernel for an
// address it fills in.
const SizeofSockaddr = unix.SizeofSockaddrInet6

// Set stores a for a socket of the given family and returns the address's
// length: AF_INET takes a's IPv4 address (IPv4-mapped IPv6 unmapped), and
// AF_INET6 takes a's 16 bytes, IPv4 addresses v4-mapped. The caller checks
// that a fits the family: an IPv6 address (or none) with AF_INET panics, as
// netip.Addr.As4 does. a's zone becomes the scope id (ZoneIndex); one that
// names no interface is dropped, and the kernel then refuses a link-local
// address as it would without one.
func (s *Sockaddr) Set(a netip.AddrPort, family int) uintptr {
	port := a.Port()
	bport := [2]byte{byte(port >> 8), byte(port)}
	if family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().Unmap().As4()}
		*(*[2]byte)(unsafe.Pointer(&sa4.Port)) = bport
		return unix.SizeofSockaddrInet4
	}
	s.raw = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr().As16()}
	if z := a.Addr().Zone(); z != "" {
		s.raw.Scope_id, _ = ZoneIndex(z)
	}
	*(*[2]byte)(unsafe.Pointer(&s.raw.Port)) = bport
	return unix.SizeofSockaddrInet6
}

// ZoneIndex is the interface index an IPv6 zone stands for: the zone itself
// when it is a number ("4"), as package net reads it, or the index of the
// interface it names ("eth0").
func ZoneIndex(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, err
	}
	return uint32(ifi.Index), nil
}

// AddrPort reads the address the kernel stored: the zero AddrPort for a
// family other than AF_INET and AF_INET6. IPv6 addresses keep their form
// (v4-mapped ones stay mapped) and drop any scope id.
func (s *Sockaddr) AddrPort() netip.AddrPort {
	switch s.raw.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&s.raw.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(s.raw.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// Pointer is the address of s's storage, for a msghdr's name.
func (s *Sockaddr) Pointer() unsafe.Pointer { return unsafe.Pointer(&s.raw) }

// Read is read(2).
func Read(fd int, p []byte) (int, error) { return rw(unix.SYS_READ, fd, p) }

// Write is write(2).
func Write(fd int, p []byte) (int, error) { return rw(unix.SYS_WRITE, fd, p) }

func rw(trap uintptr, fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(bufPointer(p)), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func bufPointer(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}

// Close is close(2), its error dropped: as after package net's Close, the
// descriptor is gone whatever close says.
func Close(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// Shutdown is shutdown(2).
func Shutdown(fd, how int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0); e != 0 {
		return e
	}
	return nil
}

// Splice is splice(2) without offsets.
func Splice(rfd, wfd, n, flags int) (int64, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int64(r), nil
}

// SetsockoptInt is unix.SetsockoptInt.
func SetsockoptInt(fd, level, name, v int) error {
	iv := int32(v)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(unsafe.Pointer(&iv)), 4, 0); e != 0 {
		return e
	}
	return nil
}

// Connect is connect(2) to addr, as an AF_INET address when addr's address
// is IPv4 or IPv4-mapped IPv6 (the socket's family then being AF_INET), as
// AF_INET6 otherwise. The socket is non-blocking: EINPROGRESS, EALREADY and
// EISCONN come back as the kernel says them.
func Connect(fd int, addr netip.AddrPort) error {
	family := unix.AF_INET6
	if addr.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	var sa Sockaddr
	n := sa.Set(addr, family)
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa.Pointer()), n); e != 0 {
		return e
	}
	return nil
}

// Accept4 is accept4(2) with SOCK_NONBLOCK and SOCK_CLOEXEC on a
// non-blocking listener, and the peer's address read in place.
func Accept4(lfd int) (int, netip.AddrPort, error) {
	var sa Sockaddr
	n := uint32(SizeofSockaddr)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(sa.Pointer()), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), sa.AddrPort(), nil
}

// Getsockname is a socket's own address; the zero AddrPort when the call
// fails or the family is neither AF_INET nor AF_INET6.
func Getsockname(fd int) netip.AddrPort {
	var sa Sockaddr
	n := uint32(SizeofSockaddr)
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(sa.Pointer()), uintptr(unsafe.Pointer(&n))); e != 0 {
		return netip.AddrPort{}
	}
	return sa.AddrPort()
}

// Sendmmsg is sendmmsg(2) of hdrs (at least one), the count of messages
// sent. An error on a message after the first is reported by the next call,
// which starts with it.
func Sendmmsg(fd int, hdrs []unix.Mmsghdr, flags int) (int, error) {
	return mmsg(unix.SYS_SENDMMSG, fd, hdrs, flags)
}

// Recvmmsg is recvmmsg(2) into hdrs (at least one) with no timeout, the
// count of messages received.
func Recvmmsg(fd int, hdrs []unix.Mmsghdr, flags int) (int, error) {
	return mmsg(unix.SYS_RECVMMSG, fd, hdrs, flags)
}

// mmsg makes sendmmsg or recvmmsg (trap); recvmmsg's timeout, the fifth
// argument, is nil.
func mmsg(trap uintptr, fd int, hdrs []unix.Mmsghdr, flags int) (int, error) {
	r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// EpollCtl is epoll_ctl(2); ev may be nil for EPOLL_CTL_DEL.
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// EpollPoll is epoll_pwait(2) with a zero timeout into events (at least
// one): it never waits. EINTR is retried.
func EpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
