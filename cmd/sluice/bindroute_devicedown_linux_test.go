package main

import (
	"net/netip"
	"testing"

	"sluice/tune/netnstest"
)

// TestBindRouteDeviceDown: with --interface, a BIND's route lookup is
// pinned to that device (SO_BINDTODEVICE on the lookup's UDP socket), so a
// device that goes down answers 0x03 network unreachable before anything
// listens, as a CONNECT through it gets from its connect, for IPv4 and
// IPv6 alike: the kernel could not answer a peer's SYN on it either. Not
// the route by the other device, which the lookup would find unpinned, nor
// a listener that no peer could reach. In a namespace of its own,
// 192.0.2.0/24 and 2001:db8::/32 go by va from 10.78.0.1 and
// 2001:db8:78::1 while it is up, and by vb from other addresses at a
// higher metric.
func TestBindRouteDeviceDown(t *testing.T) {
	t.Parallel()
	ns, wrap := bindNetns(t, "bd")
	for _, args := range [][]string{
		{"link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"link", "set", "va", "up"},
		{"link", "set", "vb", "up"},
		{"addr", "add", "10.78.0.1/32", "dev", "va"},
		{"addr", "add", "2001:db8:78::1/128", "dev", "va", "nodad"},
		{"addr", "add", "10.78.1.1/32", "dev", "vb"},
		{"addr", "add", "2001:db8:78:1::1/128", "dev", "vb", "nodad"},
		{"route", "add", "192.0.2.0/24", "dev", "va", "src", "10.78.0.1"},
		{"-6", "route", "add", "2001:db8::/32", "dev", "va", "src", "2001:db8:78::1"},
		{"route", "add", "192.0.2.0/24", "dev", "vb", "src", "10.78.1.1", "metric", "2000"},
		{"-6", "route", "add", "2001:db8::/32", "dev", "vb", "src", "2001:db8:78:1::1", "metric", "2000"},
	} {
		netnstest.IP(t, append([]string{"-n", ns}, args...)...)
	}
	p := spawnSluice(t, wrap, "--listeners", "1", "--interface", "va", "--bind-timeout", "1m")
	dsts := []struct{ dst, up string }{{"192.0.2.5:21", "10.78.0.1"}, {"[2001:db8::5]:21", "2001:db8:78::1"}}
	for _, d := range dsts {
		c, rep, bnd := bindClient(t, ns, p.addr, netip.MustParseAddrPort(d.dst))
		if ip, _ := netip.AddrFromSlice(bnd[:len(bnd)-2]); rep != 0 || ip != netip.MustParseAddr(d.up) {
			t.Errorf("BIND %s with va up: REP %#02x BND %x, want 0x00 and %s; log:\n%s", d.dst, rep, bnd, d.up, p.log())
		}
		c.Close()
	}
	netnstest.IP(t, "-n", ns, "link", "set", "va", "down")
	for _, d := range dsts {
		c, rep, bnd := bindClient(t, ns, p.addr, netip.MustParseAddrPort(d.dst))
		if rep != 0x03 {
			t.Errorf("BIND %s with va down: REP %#02x BND %x, want 0x03 network unreachable; log:\n%s", d.dst, rep, bnd, p.log())
			continue
		}
		expectClosed(t, c)
	}
}
