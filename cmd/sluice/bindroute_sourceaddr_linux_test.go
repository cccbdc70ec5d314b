package main

import (
	"net/netip"
	"testing"

	"sluice/handshake"
)

// TestBindRouteLookupFailsSourceAddr: a BIND whose route lookup fails for
// a reason other than no route (here EINVAL: a link-local DST.ADDR, which
// has no zone on the wire) still listens on, and announces, --source-addr
// when it is of DST.ADDR's family: the address the relay's connections come
// from, as when the lookup succeeds; so would one whose lookup a policy on
// UDP sockets alone refuses (EPERM, EACCES: a sandbox that allows TCP
// only). The lookup's failure used to drop --source-addr for the address
// the client reached sluice on (127.0.0.1 here), which a peer that checks
// its connection against the relay's (active FTP) refuses.
func TestBindRouteLookupFailsSourceAddr(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--source-addr", "::1", "--bind-timeout", "1m")
	c := dialSluice(t, addr)
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdBind, handshake.AddrFromAddrPort(netip.MustParseAddrPort("[fe80::1]:21"))))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	if ip, _ := netip.AddrFromSlice(bnd[:len(bnd)-2]); rep != 0 || ip != netip.IPv6Loopback() {
		t.Errorf("BIND [fe80::1]:21 with --source-addr ::1: REP %#02x BND %x, want 0x00 and ::1 (--source-addr)", rep, bnd)
	}
}
