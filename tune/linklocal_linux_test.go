package tune

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

// TestLinkLocalZones: an IPv6 link-local address takes its interface from
// its zone, by name ("eth0") or by number ("4"), as package net reads it:
// DialFd to a zoned link-local target connects (the zone was dropped, and
// the kernel refused the address without one: EINVAL), and a --source-addr
// with a numeric zone binds (it was refused as no such interface, and
// Probe dropped it). In a network namespace with fe80::1 on one end of a
// veth pair.
func TestLinkLocalZones(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	ns, nsPeer, veth, vethPeer := netnstest.Veth(t, "za", "zb")
	netnstest.LinkLocal(t, ns, nsPeer, veth, vethPeer)
	netnstest.In(t, ns, func() error {
		ifi, err := net.InterfaceByName(veth)
		if err != nil {
			return err
		}
		byName := netip.MustParseAddr("fe80::1%" + veth)
		byNumber := netip.MustParseAddr("fe80::1%" + strconv.Itoa(ifi.Index))
		l, err := net.Listen("tcp6", netip.AddrPortFrom(byName, 0).String())
		if err != nil {
			return err
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).AddrPort().Port()
		for _, target := range []netip.Addr{byName, byNumber} {
			var o Options
			fd, err := o.DialFd(context.Background(), netip.AddrPortFrom(target, port))
			if err != nil {
				t.Errorf("DialFd to %v: %v", target, err)
				continue
			}
			unix.Close(fd)
		}
		o := Options{SourceAddr: byNumber}
		probed, warnings := o.Probe()
		if len(warnings) != 0 || probed.SourceAddr != byNumber {
			t.Errorf("Probe with --source-addr %v: %v, source %v; want it kept", byNumber, warnings, probed.SourceAddr)
		}
		fd, err := probed.DialFd(context.Background(), netip.AddrPortFrom(byName, port))
		if err != nil {
			t.Errorf("DialFd from %v: %v", byNumber, err)
			return nil
		}
		defer unix.Close(fd)
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		if got := netip.AddrFrom16(sa.(*unix.SockaddrInet6).Addr); got != byName.WithZone("") {
			t.Errorf("DialFd from %v: bound to %v", byNumber, got)
		}
		return nil
	})
}
