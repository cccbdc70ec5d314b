//go:build unix

package main

import (
	"errors"
	"net/netip"
	"syscall"
)

// portTaken reports whether a listening socket already holds addr (IP and
// non-zero port): a socket bound there with SO_REUSEADDR but without
// SO_REUSEPORT, never listening, is refused only then (or by another
// socket that took the port without SO_REUSEADDR). sluice's own listeners
// set SO_REUSEPORT, so a second sluice of the same user would bind beside
// the first without a word, and take half its connections.
func portTaken(addr netip.AddrPort) bool {
	family, sa := syscall.AF_INET, syscall.Sockaddr(nil)
	if ip := addr.Addr().Unmap(); ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) != nil {
		return false
	}
	return errors.Is(syscall.Bind(fd, sa), syscall.EADDRINUSE)
}
