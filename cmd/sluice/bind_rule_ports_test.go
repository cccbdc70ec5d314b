package main

import (
	"net"
	"net/netip"
	"testing"

	"sluice/handshake"
)

// TestBindRulePorts: a rule's ports mean, for BIND, the DST.PORT the client
// named, at the check before listening and at the peer's alike, never the
// port the peer happens to connect from (an ephemeral one, or 20 for active
// FTP). The peer check used the peer's source port: an allow rule for the
// named port passed the first check, then refused every peer with 0x02
// after the first reply, and a deny of a port range refused peers whose
// ephemeral port fell in it.
func TestBindRulePorts(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name, rules string
		dst         handshake.Addr
	}{
		{"allow-dst-port",
			"default-policy = \"deny\"\n[[rule]]\naction = \"allow\"\ncommands = [\"bind\"]\nports = [\"21\"]\n",
			handshake.AddrFromAddrPort(netip.AddrPortFrom(lo, 21))},
		{"allow-dst-port-any-peer",
			"default-policy = \"deny\"\n[[rule]]\naction = \"allow\"\ncommands = [\"bind\"]\nports = [\"21\"]\n",
			handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 21))},
		{"deny-ephemeral-range",
			"[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\nports = [\"1024-65535\"]\n",
			handshake.AddrFromAddrPort(netip.AddrPortFrom(lo, 0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := startSluice(t, "--config", writeConfig(t, tc.rules), "--bind-timeout", "1m")
			c := dialSluice(t, addr)
			listening := requestOK(t, c, handshake.CmdBind, tc.dst)
			peer, err := net.Dial("tcp", listening.String())
			if err != nil {
				t.Fatalf("peer dial %v: %v", listening, err)
			}
			defer peer.Close()
			if rep, _ := readReply(t, c); rep != 0 {
				t.Fatalf("second reply REP %#02x, want 0x00 (peer from port %d)", rep, peer.LocalAddr().(*net.TCPAddr).Port)
			}
			mustWrite(t, peer, []byte("peer"))
			expect(t, c, []byte("peer"))
		})
	}
}
