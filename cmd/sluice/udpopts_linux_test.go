package main

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/handshake"

	"sluice/tune/netnstest"
)

// TestUDPSocketOptions: a UDP ASSOCIATE's sockets carry the marks of their
// sides and the upstream one --interface, as the TCP sockets do, so that
// mark-based policy routing and firewall rules hold for its datagrams. The
// build before opened both plainly: no mark, any device. The sockets are
// found among this process's descriptors, where the in-process sluice
// keeps them.
func TestUDPSocketOptions(t *testing.T) {
	t.Parallel()
	netnstest.MarkPermitted(t)
	const upMark, clMark = 0x5ca1, 0x5ca2
	echo, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	target := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	addr, _ := startSluice(t, "--upstream-mark", strconv.Itoa(upMark), "--client-mark", strconv.Itoa(clMark), "--interface", "lo")
	_, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	roundTrip(t, u, handshake.AddrFromAddrPort(target), []byte("marked"), target)

	var up, cl int
	for _, fd := range ownSockets(t, unix.SOCK_DGRAM) {
		mark, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil {
			continue
		}
		dev, _ := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
		switch {
		case mark == upMark && dev == "lo":
			up++
		case mark == upMark:
			t.Errorf("upstream UDP socket (fd %d) on device %q; want lo", fd, dev)
		case mark == clMark && dev == "":
			cl++
		case mark == clMark:
			t.Errorf("client-side UDP socket (fd %d) on device %q; want none", fd, dev)
		}
	}
	if up != 1 || cl != 1 {
		t.Errorf("found %d upstream UDP sockets marked %#x on lo and %d client-side marked %#x; want 1 each", up, upMark, cl, clMark)
	}
}

// TestUDPUnspecifiedDestination: a datagram to 0.0.0.0 or ::, which Linux
// delivers to this host, gets its answer back: it is sent to the loopback
// address that answers, so the answer passes the default addr-port filter.
// It was sent as addressed, and the answer, from 127.0.0.1 or ::1, was
// dropped as unsolicited.
func TestUDPUnspecifiedDestination(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t)
	for _, tc := range []struct{ echo, dst string }{
		{"127.0.0.1:0", "0.0.0.0"},
		{"[::1]:0", "::"},
	} {
		echo, _ := udpEcho(t, "udp", tc.echo)
		e := echo.LocalAddr().(*net.UDPAddr).AddrPort()
		_, relayAddr := associateUDP(t, addr)
		u := udpClient(t, "127.0.0.1", relayAddr)
		u.SetDeadline(time.Now().Add(3 * time.Second))
		dst := handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.dst), e.Port()))
		roundTrip(t, u, dst, []byte("to "+tc.dst), e)
	}
}
