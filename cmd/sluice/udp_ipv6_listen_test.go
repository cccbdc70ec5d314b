package main

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sluice/handshake"
)

// associateBND opens a control connection to addr, asks for UDP ASSOCIATE
// for dst and returns the relay address of the reply, IPv4 or IPv6.
func associateBND(t *testing.T, addr string, dst handshake.Addr) (*net.TCPConn, netip.AddrPort) {
	t.Helper()
	c := dialSluice(t, addr)
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdUDPAssociate, dst))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	if rep != 0 {
		t.Fatalf("UDP ASSOCIATE for %v: REP %#02x, want 0x00", dst, rep)
	}
	ip, _ := netip.AddrFromSlice(bnd[:len(bnd)-2])
	return c, netip.AddrPortFrom(ip, uint16(bnd[len(bnd)-2])<<8|uint16(bnd[len(bnd)-1]))
}

// TestUDPAssociateIPv6Listen: a client that reaches sluice on ::1 gets an
// IPv6 relay address on ::1, and its datagrams reach IPv4, IPv6 and name
// destinations, each answered with the (resolved) source's address, up to
// the largest datagram each family carries: 65,507 bytes of payload from an
// IPv4 target (in a 65,517-byte IPv6 datagram to the client), 65,505 from an
// IPv6 one (65,527 with its header, IPv6's largest). Truncated headers
// and a fragment in between are dropped and counted.
func TestUDPAssociateIPv6Listen(t *testing.T) {
	t.Parallel()
	echo4, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	echo6, _ := udpEcho(t, "udp6", "[::1]:0")
	e4 := echo4.LocalAddr().(*net.UDPAddr).AddrPort()
	e6 := echo6.LocalAddr().(*net.UDPAddr).AddrPort()
	var log syncBuffer
	_, inst := startSluiceLog(t, &log, "--listen", "[::1]:0")
	i := slices.IndexFunc(inst.addrs(), func(a string) bool { return strings.HasPrefix(a, "[::1]:") })
	if i < 0 {
		t.Fatalf("no listener on ::1: %v", inst.addrs())
	}
	c, relayAddr := associateBND(t, inst.addrs()[i], handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv6Unspecified(), 0)))
	if relayAddr.Addr() != netip.IPv6Loopback() {
		t.Fatalf("relay socket on %v, want the IP the client reached sluice on (::1)", relayAddr)
	}
	u := udpClient(t, "::1", relayAddr)
	roundTrip(t, u, handshake.AddrFromAddrPort(e4), []byte("ipv4"), e4)
	roundTrip(t, u, handshake.AddrFromAddrPort(e6), []byte("ipv6"), e6)
	roundTrip(t, u, handshake.Addr{Type: handshake.AddrDomain, Name: []byte("localhost"), Port: e4.Port()}, []byte("name"), e4)
	for _, b := range [][]byte{
		{0, 0, 0, 4, 0, 0},     // IPv6 address cut short
		{0, 0, 0, 3, 200, 'a'}, // a name longer than the datagram
		append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Frag: 1, Addr: handshake.AddrFromAddrPort(e6)}), "fragment"...),
	} {
		if _, err := u.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip(t, u, handshake.AddrFromAddrPort(e4), bytes.Repeat([]byte{4}, 65507), e4)
	roundTrip(t, u, handshake.AddrFromAddrPort(e6), bytes.Repeat([]byte{6}, 65527-22), e6)
	c.Close()
	line := udpAccessLine(t, &log)
	for _, want := range []string{"datagrams_up=5", "datagrams_down=5", "dropped=3", "denied=0"} {
		if !slices.Contains(strings.Fields(line), want) {
			t.Errorf("access line lacks %s: %s", want, line)
		}
	}
}
