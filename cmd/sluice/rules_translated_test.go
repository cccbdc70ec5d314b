package main

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sluice/handshake"
)

// TestDenyTranslatedDestinations: on real sockets, a user's `deny
// 10.0.0.0/8` refuses 10.0.0.1 inside the NAT64 well-known prefix and a
// 6to4 prefix with 0x02 and no dial (one would leave the machine, to fail
// or to take the 2 s dial timeout), a name with such an address among
// those it resolves to, and a UDP datagram to one (counted denied); an
// allowed destination still goes through.
func TestDenyTranslatedDestinations(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := uint16(echo.Addr().(*net.TCPAddr).Port)
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	cfg := writeConfig(t, "[[rule]]\naction = \"deny\"\ncidr = [\"10.0.0.0/8\"]\n")
	translated := netip.MustParseAddr("64:ff9b::a00:1")
	var log syncBuffer
	addr, _ := startSluiceResolver(t, dualResolver(t, netip.MustParseAddr("127.0.0.1"), translated), &log,
		"--config", cfg, "--dial-timeout", "2s")

	for _, tc := range []struct {
		name   string
		target handshake.Addr
	}{
		{"nat64", handshake.AddrFromAddrPort(netip.AddrPortFrom(translated, port))},
		{"6to4", handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("2002:a00:1::1"), port))},
		{"name", domainAddr("translated.test", int(port))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rep := request(t, addr, handshake.CmdConnect, tc.target)
			if rep != 0x02 {
				t.Fatalf("CONNECT %v: REP %#02x, want 0x02", tc.target, rep)
			}
			expectClosed(t, c)
		})
	}
	t.Run("loopback-allowed", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)))
		if rep != 0 {
			t.Fatalf("REP %#02x, want 0", rep)
		}
		mustWrite(t, c, []byte("ok"))
		expect(t, c, []byte("ok"))
	})
	t.Run("udp", func(t *testing.T) {
		c, relayAddr := associateUDP(t, addr)
		u := udpClient(t, "127.0.0.1", relayAddr)
		allowed := handshake.AddrFromAddrPort(uecho.LocalAddr().(*net.UDPAddr).AddrPort())
		roundTrip(t, u, allowed, []byte("first"), allowed.AddrPort()) // fixes the client's port
		to := handshake.AddrFromAddrPort(netip.AddrPortFrom(translated, 9))
		if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: to}), "no"...)); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, u, allowed, []byte("last"), allowed.AddrPort()) // decoded after the one before
		c.Close()
		line := udpAccessLine(t, &log)
		if f := strings.Fields(line); !slices.Contains(f, "denied=1") || !slices.Contains(f, "datagrams_up=2") {
			t.Errorf("access line: %s; want denied=1 datagrams_up=2", line)
		}
	})
}

// TestDenyUnspecifiedDestination: Linux connects to 0.0.0.0 as to this
// host, so `deny 127.0.0.0/8` refuses a CONNECT to 0.0.0.0 with 0x02,
// where it used to reach the loopback echo server behind the rule's back;
// with the rule gone, 0.0.0.0 still reaches it.
func TestDenyUnspecifiedDestination(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	any4 := handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(echo.Addr().(*net.TCPAddr).Port)))
	cfg := writeConfig(t, "[[rule]]\naction = \"deny\"\ncidr = [\"127.0.0.0/8\"]\n")
	denied, _ := startSluice(t, "--config", cfg)
	c, rep := request(t, denied, handshake.CmdConnect, any4)
	if rep != 0x02 {
		t.Fatalf("CONNECT 0.0.0.0 past deny 127.0.0.0/8: REP %#02x, want 0x02", rep)
	}
	expectClosed(t, c)
	open, _ := startSluice(t)
	c, rep = request(t, open, handshake.CmdConnect, any4)
	if rep != 0 {
		t.Fatalf("CONNECT 0.0.0.0 with no rule: REP %#02x, want 0 (this host)", rep)
	}
	mustWrite(t, c, []byte("ok"))
	expect(t, c, []byte("ok"))
}
