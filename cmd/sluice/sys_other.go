//go:build !linux

package main

import (
	"errors"
	"net/netip"
	"syscall"
)

// try is Linux's, where the relay has event loops to take bare sockets;
// elsewhere clients are accepted by package net.
func (b *bareAccept) try(uintptr) bool {
	b.nfd, b.err = -1, errors.ErrUnsupported
	return true
}

// sysRead and sysWrite: see sys_linux.go.
func sysRead(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }

func sysWrite(fd int, p []byte) (int, error) { return syscall.Write(fd, p) }

// fdLocalAddrPort is a socket's own address, sent as BND in the success
// reply.
func fdLocalAddrPort(fd int) netip.AddrPort {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}
