package main

import (
	"net/netip"
	"testing"

	"sluice/handshake"
)

// TestBindNamePeer: a domain rule lets into a BIND only a peer from an
// address the name resolves to. The peer check passed DST.ADDR's name to
// the rules and never compared the peer with it, so `default-policy =
// "deny"` with an allow rule for bind on ftp.test let any peer from any
// address in. A deny on the name still refuses every peer, a name that does
// not resolve refuses the peer with 0x04 (as a CONNECT to it), and where
// the rules allow the peer without the name it is not looked up. A peer
// refused is closed unanswered and the BIND waits on (it ended with 0x02:
// TestBindWrongPeerWaits): then a peer from the name's address gets its
// 0x00. A name the rules deny whatever it resolves to is refused before
// listening, rules on addresses or not.
func TestBindNamePeer(t *testing.T) {
	t.Parallel()
	const (
		deny      = "default-policy = \"deny\"\n"
		allowName = "[[rule]]\naction = \"allow\"\ncommands = [\"bind\"]\ndomains = [\"ftp.test\"]\n"
		denyName  = "[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\ndomains = [\"ftp.test\"]\n"
		denyOther = "[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\ndomains = [\"other.test\"]\n"
		// A rule that looks at addresses: the name is then not checked
		// before listening, only with the peer.
		denyNet = "[[rule]]\naction = \"deny\"\ncidr = [\"192.0.2.0/24\"]\n"
	)
	ftp := netip.MustParseAddr("127.0.0.2")
	const refused = 0xfe // the peer is closed, with no reply
	for _, tc := range []struct {
		name, rules string
		resolves    bool // ftp.test resolves to 127.0.0.2; otherwise NXDOMAIN
		peer        string
		rep         byte // the second reply's; 0xff: the first reply is 0x02; refused: none
		then        byte // after refused, the second reply once a peer from 127.0.0.2 comes
	}{
		{"allow-name-peer-of-name", deny + allowName, true, "127.0.0.2", 0x00, 0},
		{"allow-name-other-peer", deny + allowName, true, "127.0.0.3", refused, 0x00},
		{"allow-name-unresolved", deny + allowName, false, "127.0.0.2", 0x04, 0},
		{"allow-name-addr-rules-peer-of-name", deny + denyNet + allowName, true, "127.0.0.2", 0x00, 0},
		{"allow-name-addr-rules-other-peer", deny + denyNet + allowName, true, "127.0.0.3", refused, 0x00},
		{"deny-name", denyName, true, "", 0xff, 0},
		// Refused before listening though a rule looks at addresses:
		// the name is denied whatever it resolves to (the build before
		// sent 0x00, then refused every peer until --bind-timeout).
		{"deny-name-addr-rules", denyNet + denyName, true, "", 0xff, 0},
		{"deny-name-addr-rules-unresolved", denyNet + denyName, false, "", 0xff, 0},
		{"allowed-without-name-no-lookup", denyOther, false, "127.0.0.3", 0x00, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := nxdomainResolver(t)
			if tc.resolves {
				r = fixedResolver(t, ftp)
			}
			var log syncBuffer
			addr, _ := startSluiceResolver(t, r, &log, "--config", writeConfig(t, tc.rules), "--bind-timeout", "1m")
			if tc.rep == 0xff {
				c, rep := request(t, addr, handshake.CmdBind, domainAddr("ftp.test", 21))
				if rep != 0x02 {
					t.Fatalf("first reply REP %#02x, want 0x02", rep)
				}
				expectClosed(t, c)
				return
			}
			c := dialSluice(t, addr)
			listening := requestOK(t, c, handshake.CmdBind, domainAddr("ftp.test", 21))
			if tc.rep == refused {
				refusedPeer(t, tc.peer, listening) // and no reply: the next is the second peer's
				tc.rep, tc.peer = tc.then, "127.0.0.2"
			}
			peer := dialFrom(t, tc.peer, listening)
			if rep, _ := readReply(t, c); rep != tc.rep {
				t.Fatalf("second reply REP %#02x, want %#02x (peer from %s)", rep, tc.rep, tc.peer)
			}
			if tc.rep != 0 {
				expectClosed(t, c)
				return
			}
			mustWrite(t, peer, []byte("peer"))
			expect(t, c, []byte("peer"))
			mustWrite(t, c, []byte("client"))
			expect(t, peer, []byte("client"))
		})
	}
}
