//go:build unix

package main

import (
	"errors"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// portShared reports whether listening sockets that sluice would share its
// connections with already hold addr (IP and non-zero port): SO_REUSEPORT
// ones of this user, as a running sluice's are. A socket bound there with
// SO_REUSEADDR alone, never listening, is refused only by a listener (or by
// a socket that took the port without SO_REUSEADDR); one with SO_REUSEPORT
// too is let in beside SO_REUSEPORT listeners of the same user, as sluice's
// own listeners will be. When only the first is refused, something else
// holds the port and sluice's bind fails with its own error: no sharing.
func portShared(addr netip.AddrPort) bool {
	return bindRefused(addr, false) && !bindRefused(addr, true)
}

// bindRefused reports whether a probe socket with SO_REUSEADDR (and
// SO_REUSEPORT if reusePort) gets EADDRINUSE binding addr; it never
// listens, and is closed at once.
func bindRefused(addr netip.AddrPort, reusePort bool) bool {
	family, sa := syscall.AF_INET, syscall.Sockaddr(nil)
	if ip := addr.Addr().Unmap(); ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	}
	// Close-on-exec from the start, as package net makes its sockets where
	// SOCK_CLOEXEC may be missing: a fork meanwhile (a --workers start)
	// must not inherit the probe.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) != nil {
		return false
	}
	if reusePort && syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1) != nil {
		return true // no SO_REUSEPORT: nothing to share with
	}
	return errors.Is(syscall.Bind(fd, sa), syscall.EADDRINUSE)
}
