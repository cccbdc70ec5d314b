//go:build !linux

package main

import (
	"errors"
	"net/netip"
)

// Off Linux, sessions are served through package net alone: there are no
// bare sockets (try answers errors.ErrUnsupported, as tune.DialFd does), so
// the descriptor functions below are never reached on the serving path.

// try is Linux's, where the relay has event loops to take bare sockets;
// elsewhere clients are accepted by package net.
func (b *bareAccept) try(uintptr) bool {
	b.nfd, b.err = -1, errors.ErrUnsupported
	return true
}

func sysRead(int, []byte) (int, error) { return 0, errors.ErrUnsupported }

func sysWrite(int, []byte) (int, error) { return 0, errors.ErrUnsupported }

func fdLocalAddrPort(int) netip.AddrPort { return netip.AddrPort{} }

func sysClose(int) error { return errors.ErrUnsupported }

func sysLingerZero(int) {}

func dupCloexec(int) (int, error) { return -1, errors.ErrUnsupported }

// hungUp cannot tell a FIN behind received bytes here (no POLLRDHUP):
// BIND's watch (watchPeer) then ends at the first byte, and a client that
// sends before its peer came and then leaves is noticed when the wait ends.
func hungUp(uintptr) (hung, known bool) { return false, false }

// monotonicMicros is Linux's: sd_notify is systemd's.
func monotonicMicros() (int64, bool) { return 0, false }
