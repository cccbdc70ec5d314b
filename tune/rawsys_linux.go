package tune

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// DialFd's system calls on its new socket go through RawSyscall: none can
// block (the socket is non-blocking), and a connect on loopback, which runs
// the whole three-way handshake, lasts long enough for sysmon to hand the
// P to another thread were it made through entersyscall.

// connectRaw is unix.Connect on a non-blocking socket, raw.
func connectRaw(fd int, sa unix.Sockaddr) error {
	var (
		p   unsafe.Pointer
		len uintptr
	)
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		rsa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr}
		pp := (*[2]byte)(unsafe.Pointer(&rsa.Port))
		pp[0], pp[1] = byte(a.Port>>8), byte(a.Port)
		p, len = unsafe.Pointer(&rsa), unix.SizeofSockaddrInet4
	case *unix.SockaddrInet6:
		rsa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr, Scope_id: a.ZoneId}
		pp := (*[2]byte)(unsafe.Pointer(&rsa.Port))
		pp[0], pp[1] = byte(a.Port>>8), byte(a.Port)
		p, len = unsafe.Pointer(&rsa), unix.SizeofSockaddrInet6
	default:
		return unix.Connect(fd, sa)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), len); e != 0 {
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
