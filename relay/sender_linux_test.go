package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSender checks the raw sendto path of the datagram relay against what
// package net's WriteToUDPAddrPort does: IPv4 and IPv6 sockets, an IPv4
// destination on a dual-stack socket (v4-mapped), and the destinations
// package net refuses, which must fail the same way.
func TestSender(t *testing.T) {
	t.Parallel()
	listen := func(t *testing.T, network, addr string) *net.UDPConn {
		t.Helper()
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			t.Skipf("listen %s %s: %v", network, addr, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// receive reads one datagram on c within 10 s.
	receive := func(t *testing.T, c *net.UDPConn) (string, netip.AddrPort) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	}
	cases := []struct {
		name          string
		network, from string // the sending socket
		inet6         bool
		to            string // the receiving socket
	}{
		{"ipv4", "udp4", "127.0.0.1:0", false, "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0", true, "[::1]:0"},
		{"dual-stack to ipv4", "udp", "[::]:0", true, "127.0.0.1:0"},
		{"dual-stack to ipv6", "udp", "[::]:0", true, "[::1]:0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := listen(t, tc.network, tc.from)
			dst := listen(t, "udp", tc.to)
			s := newSender(src)
			if inet6 := s.family == unix.AF_INET6; s.rc == nil || inet6 != tc.inet6 {
				t.Fatalf("raw path: rc %v, inet6 %v; want a raw path with inet6 %v", s.rc != nil, inet6, tc.inet6)
			}
			to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
			to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
			for _, msg := range []string{"first", "", "third"} {
				if err := s.send([]byte(msg), to); err != nil {
					t.Fatalf("send %q to %v: %v", msg, to, err)
				}
				got, from := receive(t, dst)
				if got != msg {
					t.Fatalf("received %q, want %q", got, msg)
				}
				if from.Port() != src.LocalAddr().(*net.UDPAddr).AddrPort().Port() {
					t.Fatalf("received from %v, want the sender's port", from)
				}
			}
		})
	}
	t.Run("refused like package net", func(t *testing.T) {
		src := listen(t, "udp4", "127.0.0.1:0")
		s := newSender(src)
		for _, to := range []netip.AddrPort{{}, netip.MustParseAddrPort("[::1]:9")} {
			_, want := src.WriteToUDPAddrPort([]byte("x"), to)
			err := s.send([]byte("x"), to)
			if want == nil || err == nil || err.Error() != want.Error() {
				t.Errorf("send to %v: %v, want package net's %v", to, err, want)
			}
		}
	})
}
