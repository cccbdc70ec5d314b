package main

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"sluice/handshake"

	"sluice/tune/netnstest"
)

// TestLinkLocalClient serves a client that reaches sluice on an IPv6
// link-local address, whose addresses carry a zone (the interface) where
// the wire's have none: sluice in one network namespace, the client in
// another, joined by a veth pair (fe80::1 and fe80::2, without duplicate
// address detection). A UDP association's datagrams from the client are
// relayed and answered (they were all dropped as a stranger's), and a BIND
// whose DST.ADDR is the client's link-local address takes a peer from it
// (it got 0x02). A client rule that denies link-local clients refuses this
// one on every accept path.
func TestLinkLocalClient(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	nsS, nsC, vethS, vethC := netnstest.Veth(t, "ls", "lc")
	netnstest.LinkLocal(t, nsS, nsC, vethS, vethC)

	// A UDP echo target beside sluice.
	var echo *net.UDPConn
	netnstest.In(t, nsS, func() (err error) {
		echo, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	serveUDPEcho(t, echo)

	p := spawnSluice(t, []string{"ip", "netns", "exec", nsS}, "--listen", "[fe80::1%"+vethS+"]:0", "--allow-open-relay", "--listeners", "1")
	port := netip.MustParseAddrPort(p.addr).Port()
	server := netip.AddrPortFrom(netip.MustParseAddr("fe80::1%"+vethC), port)
	client := netip.MustParseAddr("fe80::2%" + vethC)
	// dial opens a TCP connection from the client's namespace.
	dial := func(to netip.AddrPort) *net.TCPConn {
		t.Helper()
		var c *net.TCPConn
		netnstest.In(t, nsC, func() (err error) {
			c, err = net.DialTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, 0)), net.TCPAddrFromAddrPort(to))
			return err
		})
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	// request sends greeting and a request of cmd for dst and returns the
	// reply's BND as an address on the client's side of the link.
	request := func(c *net.TCPConn, cmd byte, dst handshake.Addr) netip.AddrPort {
		t.Helper()
		mustWrite(t, c, append([]byte{5, 1, 0, 5, cmd, 0}, handshake.AppendAddr(nil, dst)...))
		expect(t, c, []byte{5, 0})
		rep, bnd := readReply(t, c)
		if rep != 0 || len(bnd) != 18 {
			t.Fatalf("command %d: REP %#02x BND %x, want 0x00 and an IPv6 address", cmd, rep, bnd)
		}
		ip := netip.AddrFrom16([16]byte(bnd[:16]))
		if ip != netip.MustParseAddr("fe80::1") {
			t.Fatalf("command %d: BND %v, want fe80::1", cmd, ip)
		}
		return netip.AddrPortFrom(ip.WithZone(vethC), uint16(bnd[16])<<8|uint16(bnd[17]))
	}

	t.Run("udp", func(t *testing.T) {
		ctl := dial(server)
		relayAddr := request(ctl, 3, handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv6Unspecified(), 0)))
		var u *net.UDPConn
		netnstest.In(t, nsC, func() (err error) {
			u, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(client, 0)))
			return err
		})
		defer u.Close()
		u.SetDeadline(time.Now().Add(10 * time.Second))
		target := handshake.AddrFromAddrPort(echo.LocalAddr().(*net.UDPAddr).AddrPort())
		msg := append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: target}), "over the link"...)
		if _, err := u.WriteToUDPAddrPort(msg, relayAddr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, _, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no answer through the association: %v; log:\n%s", err, p.log())
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("answer %q, want %q", buf[:n], msg)
		}
	})
	t.Run("bind", func(t *testing.T) {
		ctl := dial(server)
		listening := request(ctl, 2, handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("fe80::2"), 0)))
		peer := dial(listening)
		rep, bnd := readReply(t, ctl)
		if rep != 0 || len(bnd) != 18 || netip.AddrFrom16([16]byte(bnd[:16])) != netip.MustParseAddr("fe80::2") {
			t.Fatalf("second reply REP %#02x BND %x, want 0x00 and fe80::2", rep, bnd)
		}
		mustWrite(t, peer, []byte("from the peer"))
		expect(t, ctl, []byte("from the peer"))
	})
	// A client rule denying link-local clients holds on every accept path
	// (package net's addresses carry the zone, and no prefix contained them).
	cfg := writeConfig(t, "[[client-rule]]\naction = \"deny\"\ncidr = [\"fe80::/10\"]\n")
	for _, mode := range [][]string{nil, {"--net-sockets"}, {"--loops=-1"}} {
		t.Run(fmt.Sprintf("client-rule%v", mode), func(t *testing.T) {
			args := append([]string{"--listen", "[fe80::1%" + vethS + "]:0", "--allow-open-relay", "--listeners", "1", "--config", cfg}, mode...)
			q := spawnSluice(t, []string{"ip", "netns", "exec", nsS}, args...)
			c := dial(netip.AddrPortFrom(netip.MustParseAddr("fe80::1%"+vethC), netip.MustParseAddrPort(q.addr).Port()))
			mustWrite(t, c, []byte{5, 1, 0})
			expectClosed(t, c)
		})
	}
}
