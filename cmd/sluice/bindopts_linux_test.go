package main

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

// bindSockCase is one socket option of a BIND's sockets and its expected
// read-back.
type bindSockCase struct {
	name        string
	level, opt  int
	want        int
	perSocketOp bool // set after accept (ApplyUpstream), not on the listener
}

// TestBindUpstreamSocketOptions: a BIND's listening socket and the peer's
// socket it accepts carry the upstream options, as a CONNECT's dialled
// socket does (the peer is the upstream side of the session): buffers,
// keepalive, user timeout, congestion control and not-sent low-water mark
// on the listener, inherited by the peer's socket, and Nagle set on that
// socket after accept. The --client-X values are not the BIND's. The build
// before opened both with package net's defaults: kernel buffers and
// congestion control, keepalive 15s/15s/9 on the peer and none on the
// listener, TCP_NODELAY set.
func TestBindUpstreamSocketOptions(t *testing.T) {
	t.Parallel()
	const buf = 96 << 10 // under net.core.rmem_max and wmem_max's defaults
	addr, _ := startSluice(t,
		"--upstream-rcvbuf", strconv.Itoa(buf), "--upstream-sndbuf", strconv.Itoa(buf+4096),
		"--upstream-keepalive-idle", "33s", "--upstream-keepalive-interval", "2s", "--upstream-keepalive-count", "4",
		"--upstream-user-timeout", "12345ms", "--client-user-timeout", "9s",
		"--upstream-congestion", "reno", "--upstream-notsent-lowat", "16384", "--upstream-nodelay=false")
	checkBindSockets(t, addr, []bindSockCase{
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, 2 * buf, false}, // the kernel doubles it
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, 2 * (buf + 4096), false},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, false},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 33, false},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 2, false},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4, false},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 12345, false},
		{"TCP_NOTSENT_LOWAT", unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 16384, false},
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP, false}, // MPTCP off
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0, true},
	}, map[string]string{"TCP_CONGESTION": "reno"})
}

// TestBindUpstreamMarkDevice: a BIND's listening socket and its peer's
// socket carry --upstream-mark (not --client-mark) and --interface, so that
// the peer's packets are routed and filtered as the upstream traffic is;
// the build before left both unmarked and on any device.
func TestBindUpstreamMarkDevice(t *testing.T) {
	t.Parallel()
	netnstest.MarkPermitted(t)
	const upMark = 0x5a1ce
	addr, _ := startSluice(t, "--upstream-mark", strconv.Itoa(upMark), "--client-mark", "0x77", "--interface", "lo")
	checkBindSockets(t, addr, []bindSockCase{
		{"SO_MARK", unix.SOL_SOCKET, unix.SO_MARK, upMark, false},
	}, map[string]string{"SO_BINDTODEVICE": "lo"})
}

// TestBindRefusedOptionWarns: an upstream option the kernel refuses gets
// the one warning of the startup probe and is left off, and BIND works
// without it (the listener does not fail on it).
func TestBindRefusedOptionWarns(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	addr, _ := startSluiceLog(t, &log, "--upstream-congestion", "no-such-algorithm")
	c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	peer := dialFrom(t, "127.0.0.1", listening)
	expectPeerReply(t, c, peer)
	if n := strings.Count(log.String(), "--upstream-congestion (TCP_CONGESTION)"); n != 1 {
		t.Errorf("%d warnings naming --upstream-congestion, want 1; log:\n%s", n, log.String())
	}
}

// checkBindSockets runs a BIND to 127.0.0.1 on the in-process sluice at
// addr and reads each case back from its listening socket, while it waits,
// and from the peer's socket it accepted, after the second reply; strs
// holds the string options (TCP_CONGESTION, SO_BINDTODEVICE) read from
// both. The sockets are found among this process's descriptors by their
// addresses.
func checkBindSockets(t *testing.T, addr string, cases []bindSockCase, strs map[string]string) {
	t.Helper()
	c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	check := func(what string, fd int, perSocket bool) {
		t.Helper()
		for _, tc := range cases {
			if tc.perSocketOp && !perSocket {
				continue
			}
			if got, err := unix.GetsockoptInt(fd, tc.level, tc.opt); err != nil || got != tc.want {
				t.Errorf("%s %s = %d (%v), want %d", what, tc.name, got, err, tc.want)
			}
		}
		for name, want := range strs {
			level, opt := unix.IPPROTO_TCP, unix.TCP_CONGESTION
			if name == "SO_BINDTODEVICE" {
				level, opt = unix.SOL_SOCKET, unix.SO_BINDTODEVICE
			}
			if got, err := unix.GetsockoptString(fd, level, opt); err != nil || got != want {
				t.Errorf("%s %s = %q (%v), want %q", what, name, got, err, want)
			}
		}
	}
	check("listener", socketOf(t, listening, netip.AddrPort{}), false)
	peer := dialFrom(t, "127.0.0.1", listening)
	expectPeerReply(t, c, peer)
	check("peer's socket", socketOf(t, listening, peer.LocalAddr().(*net.TCPAddr).AddrPort()), true)
}

// socketOf returns the descriptor of this process (the in-process sluice's)
// for the TCP socket bound to local that is connected to remote, or that
// listens when remote is the zero AddrPort. Other tests open and close
// descriptors meanwhile: one that is gone or of another kind is passed over.
// The scan is made again until it finds the socket: the relay takes a
// session's sockets over through duplicates and closes the originals, so a
// scan may list a number that is closed by the time it is read, and not
// yet the duplicate.
func socketOf(t *testing.T, local, remote netip.AddrPort) int {
	t.Helper()
	fd := -1
	if !waitFor(10*time.Second, func() bool { fd = scanSocketOf(t, local, remote); return fd >= 0 }) { // safety net
		t.Fatalf("no socket of this process bound to %v with peer %v", local, remote)
	}
	return fd
}

// scanSocketOf is one scan of socketOf's: -1 when it finds none.
func scanSocketOf(t *testing.T, local, remote netip.AddrPort) int {
	for _, fd := range ownSockets(t, unix.SOCK_STREAM) {
		if sa, err := unix.Getsockname(fd); err != nil || sockaddrAddrPort(sa) != local {
			continue
		}
		if !remote.IsValid() {
			if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && on == 1 {
				return fd
			}
			continue
		}
		if sa, err := unix.Getpeername(fd); err == nil && sockaddrAddrPort(sa) == remote {
			return fd
		}
	}
	return -1
}

// ownSockets lists this process's descriptors (the in-process sluice's,
// among others) that are sockets of type typ (SOCK_STREAM, SOCK_DGRAM).
// Other tests open and close descriptors meanwhile: one that is gone or of
// another kind by the time it is looked at is left out, and one listed may
// be closed, or another file's, by the time the caller reads it.
func ownSockets(t *testing.T, typ int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err == nil && got == typ {
			fds = append(fds, fd)
		}
	}
	return fds
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
