package relay

import (
	"fmt"
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
			s := newSender(src, nil)
			if inet6 := s.family == unix.AF_INET6; s.rc == nil || inet6 != tc.inet6 {
				t.Fatalf("raw path: rc %v, inet6 %v; want a raw path with inet6 %v", s.rc != nil, inet6, tc.inet6)
			}
			to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
			to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
			for _, msg := range []string{"first", "", "third"} {
				if err := s.send([]byte(msg), to, int64(len(msg))); err != nil {
					t.Fatalf("send %q to %v: %v", msg, to, err)
				}
				s.flush()
				if n, _ := s.refused(); n != 0 {
					t.Fatalf("send %q to %v: %d refused at the flush", msg, to, n)
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
		s := newSender(src, nil)
		for _, to := range []netip.AddrPort{{}, netip.MustParseAddrPort("[::1]:9")} {
			_, want := src.WriteToUDPAddrPort([]byte("x"), to)
			err := s.send([]byte("x"), to, 1)
			if want == nil || err == nil || err.Error() != want.Error() {
				t.Errorf("send to %v: %v, want package net's %v", to, err, want)
			}
		}
	})
}

// TestSenderBatch checks the queue that flush sends with sendmmsg: more
// datagrams than a batch holds arrive whole and in order; one the kernel
// refuses (over the 65,507 bytes an IPv4 datagram holds) is counted in
// refused, with the bytes it was queued with, and the others still go; and
// a datagram that takes package net's path waits for those queued before
// it. What was sent, and only that, is counted in the sender's udpCount.
func TestSenderBatch(t *testing.T) {
	t.Parallel()
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	dst.SetReadBuffer(1 << 20)
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	var live udpCount
	s := newSender(src, &live)
	if s.rc == nil {
		t.Fatal("no raw path on a UDP socket")
	}
	counted := func(n, bytes int64) {
		t.Helper()
		if ln, lb := live.n.Load(), live.bytes.Load(); ln != n || lb != bytes {
			t.Errorf("counted %d datagrams of %d bytes; want %d of %d", ln, lb, n, bytes)
		}
	}
	var want []string
	var wantBytes, firstBatch int64 // what leaves in all, and at the flush that a full queue makes
	for i := range batchSlots + 3 {
		msg := fmt.Sprintf("datagram %d", i)
		p := []byte(msg)
		if i == 4 {
			p = make([]byte, 70_000) // EMSGSIZE
		} else {
			want = append(want, msg)
			wantBytes += int64(len(msg))
			if i < batchSlots {
				firstBatch += int64(len(msg))
			}
		}
		if err := s.send(p, to, int64(len(p))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	counted(batchSlots-1, firstBatch) // the full queue went, but for the one refused; 3 wait
	s.flush()
	if n, bytes := s.refused(); n != 1 || bytes != 70_000 {
		t.Errorf("refused %d datagrams of %d bytes; want 1 of 70000", n, bytes)
	}
	counted(batchSlots+2, wantBytes)
	// Queued, then one through package net's path (a zoned address):
	// the queued one must arrive first.
	if err := s.send([]byte("queued"), to, 6); err != nil {
		t.Fatal(err)
	}
	zoned := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1").WithZone("lo"), to.Port())
	if err := s.send([]byte("direct"), zoned, 6); err != nil {
		t.Fatalf("send to %v: %v", zoned, err)
	}
	counted(batchSlots+4, wantBytes+12)
	want = append(want, "queued", "direct")
	buf := make([]byte, 2048)
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, w := range want {
		n, err := dst.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v", w, err)
		}
		if got := string(buf[:n]); got != w {
			t.Fatalf("received %q, want %q", got, w)
		}
	}
}
