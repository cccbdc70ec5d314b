package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"sluice/handshake"
	"sluice/tune/netnstest"
)

// TestNameLinkLocalZone: a name that the hosts file gives as a link-local
// address with its interface keeps the zone, as a CONNECT's does
// (TestConnectNameLinkLocalZone): a --listen host name listens on the
// scoped address, and a UDP ASSOCIATE datagram to the name is sent with the
// zone and answered. Both lookups (LookupNetIP) dropped it: the start
// failed to bind fe80::1 (EINVAL), and the datagrams left by whichever link
// the kernel's route for fe80::/64 named. sluice
// runs in one network namespace with its own /etc/hosts (ip netns exec
// bind-mounts /etc/netns/NAME/hosts over it), its peer in another, joined
// by a veth pair: fe80::1 on sluice's side, fe80::2 on the peer's.
func TestNameLinkLocalZone(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	nsS, nsP, vethS, vethP := netnstest.Veth(t, "ms", "mp")
	netnstest.LinkLocal(t, nsS, nsP, vethS, vethP)
	// A decoy link beside vethS, preferred for fe80::/64: a datagram to
	// fe80::2 without its zone leaves by it (alone, vethS would have been
	// the kernel's only route there, zone or not).
	id := os.Getpid() % 100000
	decoy := fmt.Sprintf("slmx%d", id)
	netnstest.IP(t, "-n", nsS, "link", "add", decoy, "type", "veth", "peer", "name", fmt.Sprintf("slmy%d", id))
	netnstest.IP(t, "-n", nsS, "link", "set", decoy, "addrgenmode", "none")
	netnstest.IP(t, "-n", nsS, "addr", "add", "fe80::5/64", "dev", decoy, "nodad")
	netnstest.IP(t, "-n", nsS, "link", "set", decoy, "up")
	netnstest.IP(t, "-n", nsS, "-6", "route", "add", "fe80::/64", "dev", decoy, "metric", "1")
	netnsHosts(t, nsS, fmt.Sprintf("127.0.0.1 localhost\nfe80::1%%%[1]s self.test\nfe80::2%%%[1]s peer.test\n", vethS))
	netns := []string{"ip", "netns", "exec", nsS}

	t.Run("listen", func(t *testing.T) {
		p := spawnSluice(t, netns, "--listen", "self.test:0", "--allow-open-relay", "--listeners", "1")
		ap, err := netip.ParseAddrPort(p.addr)
		if err != nil || ap.Addr() != netip.MustParseAddr("fe80::1%"+vethS) {
			t.Fatalf("listening on %q, want [fe80::1%%%s]:PORT; log:\n%s", p.addr, vethS, p.log())
		}
		var c net.Conn
		netnstest.In(t, nsP, func() (err error) {
			c, err = net.Dial("tcp", net.JoinHostPort("fe80::1%"+vethP, fmt.Sprint(ap.Port())))
			return err
		})
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		mustWrite(t, c, []byte{5, 1, 0})
		expect(t, c, []byte{5, 0})
	})

	t.Run("udp", func(t *testing.T) {
		var echo *net.UDPConn
		netnstest.In(t, nsP, func() (err error) {
			echo, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[fe80::2%"+vethP+"]:0")))
			return err
		})
		serveUDPEcho(t, echo)
		port := echo.LocalAddr().(*net.UDPAddr).AddrPort().Port()

		p := spawnSluice(t, netns, "--listeners", "1")
		var c *net.TCPConn
		netnstest.In(t, nsS, func() error {
			nc, err := net.Dial("tcp", p.addr)
			if err == nil {
				c = nc.(*net.TCPConn)
			}
			return err
		})
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		relayAddr := requestOK(t, c, handshake.CmdUDPAssociate, handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
		var u *net.UDPConn
		netnstest.In(t, nsS, func() (err error) {
			u, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relayAddr))
			return err
		})
		defer u.Close()
		u.SetDeadline(time.Now().Add(5 * time.Second)) // a datagram sent without the zone never comes back
		dst := handshake.Addr{Type: handshake.AddrDomain, Name: []byte("peer.test"), Port: port}
		if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: dst}), "hello"...)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("datagram to peer.test:%d (fe80::2%%%s in the hosts file): no echo: %v; log:\n%s", port, vethS, err, p.log())
		}
		h, hl, err := handshake.ParseUDPHeader(buf[:n])
		if want := netip.MustParseAddrPort(fmt.Sprintf("[fe80::2]:%d", port)); err != nil || h.Addr.AddrPort() != want || string(buf[hl:n]) != "hello" {
			t.Fatalf("reply header %+v (%v), payload %q; want from %v, hello", h, err, buf[hl:n], want)
		}
	})
}
