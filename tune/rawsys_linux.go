package tune

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DialFd's system calls on its new socket go through RawSyscall: none can
// block (the socket is non-blocking), and a connect on loopback, which runs
// the whole three-way handshake, lasts long enough for sysmon to hand the
// P to another thread were it made through entersyscall.

// connectRaw is unix.Connect on a non-blocking socket, raw, to addr: IPv4
// when addr's address is IPv4 or IPv4-mapped IPv6 (the socket's family then
// being AF_INET), IPv6 otherwise. The sockaddr is built on the stack, where
// unix.Connect's interface would allocate one per call.
func connectRaw(fd int, addr netip.AddrPort) error {
	var (
		p     unsafe.Pointer
		n     uintptr
		port  = addr.Port()
		rsa4  unix.RawSockaddrInet4
		rsa6  unix.RawSockaddrInet6
		ip    = addr.Addr()
		bport = [2]byte{byte(port >> 8), byte(port)}
	)
	if ip.Unmap().Is4() {
		rsa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.Unmap().As4()}
		*(*[2]byte)(unsafe.Pointer(&rsa4.Port)) = bport
		p, n = unsafe.Pointer(&rsa4), unix.SizeofSockaddrInet4
	} else {
		rsa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		*(*[2]byte)(unsafe.Pointer(&rsa6.Port)) = bport
		p, n = unsafe.Pointer(&rsa6), unix.SizeofSockaddrInet6
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), n); e != 0 {
		return e
	}
	return nil
}

// setsockoptInt is unix.SetsockoptInt, raw: setsockopt never blocks.
func setsockoptInt(fd, level, name, v int) error {
	iv := int32(v)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(unsafe.Pointer(&iv)), 4, 0); e != 0 {
		return e
	}
	return nil
}

// closeRaw is unix.Close, raw.
func closeRaw(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
