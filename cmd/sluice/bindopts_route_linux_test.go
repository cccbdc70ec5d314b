package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"sluice/handshake"
	"sluice/tune/netnstest"
)

// bindNetns makes a network namespace named after tag and this process,
// with loopback up, for a sluice run in it (spawnSluice with the returned
// wrapper) and its clients (bindClient); it is removed when the test ends.
func bindNetns(t *testing.T, tag string) (ns string, wrap []string) {
	t.Helper()
	netnstest.Need(t)
	ns = fmt.Sprintf("sluice-%s%d", tag, os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	return ns, []string{"ip", "netns", "exec", ns}
}

// bindClient connects to the sluice at addr from namespace ns and sends a
// greeting and a BIND for dst; it returns the connection and the first
// reply's REP and BND.
func bindClient(t *testing.T, ns, addr string, dst netip.AddrPort) (*net.TCPConn, byte, []byte) {
	t.Helper()
	var c *net.TCPConn
	netnstest.In(t, ns, func() error {
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			c = nc.(*net.TCPConn)
		}
		return err
	})
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) // safety net
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdBind, handshake.AddrFromAddrPort(dst)))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	return c, rep, bnd
}

// TestBindRouteUpstreamOptions: the address a BIND listens on and announces
// is the source of the route to DST.ADDR that the upstream traffic takes,
// looked up with --upstream-mark and --interface as a CONNECT's dial is.
// In a namespace of its own, 192.0.2.0/24 goes by va from 10.77.0.1 in the
// main table, by va from 10.77.0.2 in table 100 (for mark 7), and by vb
// from 10.77.1.1 at a higher metric. The build before looked the route up
// unmarked and on any device, and announced 10.77.0.1 in every case: an
// address the marked or pinned upstream traffic never uses.
func TestBindRouteUpstreamOptions(t *testing.T) {
	t.Parallel()
	ns, wrap := bindNetns(t, "br")
	for _, args := range [][]string{
		{"link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"link", "set", "va", "up"},
		{"link", "set", "vb", "up"},
		{"addr", "add", "10.77.0.1/32", "dev", "va"},
		{"addr", "add", "10.77.0.2/32", "dev", "va"},
		{"addr", "add", "10.77.1.1/32", "dev", "vb"},
		{"route", "add", "192.0.2.0/24", "dev", "va", "src", "10.77.0.1"},
		{"route", "add", "192.0.2.0/24", "dev", "vb", "src", "10.77.1.1", "metric", "100"},
		{"route", "add", "192.0.2.0/24", "dev", "va", "src", "10.77.0.2", "table", "100"},
		{"rule", "add", "fwmark", "7", "table", "100"},
	} {
		netnstest.IP(t, append([]string{"-n", ns}, args...)...)
	}
	dst := netip.MustParseAddrPort("192.0.2.5:21")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"upstream-mark", []string{"--upstream-mark", "7"}, "10.77.0.2"},
		{"client-mark", []string{"--client-mark", "7"}, "10.77.0.1"}, // the client side's mark is not the peer's
		{"interface", []string{"--interface", "vb"}, "10.77.1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := spawnSluice(t, wrap, append([]string{"--listeners", "1"}, tc.args...)...)
			_, rep, bnd := bindClient(t, ns, p.addr, dst)
			ip, _ := netip.AddrFromSlice(bnd[:len(bnd)-2])
			if rep != 0 || ip != netip.MustParseAddr(tc.want) {
				t.Errorf("BIND %v with %q: first reply REP %#02x BND %v, want 0x00 and %s; log:\n%s", dst, tc.args, rep, ip, tc.want, p.log())
			}
		})
	}
}

// TestBindNoRoute: a BIND whose DST.ADDR no route leads to is answered as a
// CONNECT to it is, 0x03 (network unreachable; 0x04 for an unreachable
// route), before listening: the kernel could not answer that peer's SYN,
// so no peer could ever connect. The build before listened on the address
// the client came in on, sent 0x00, and waited out --bind-timeout. sluice
// runs in a namespace with loopback alone and an unreachable route for
// 198.51.100.0/24; a BIND to 127.0.0.1 still works there.
func TestBindNoRoute(t *testing.T) {
	t.Parallel()
	ns, wrap := bindNetns(t, "bn")
	netnstest.IP(t, "-n", ns, "route", "add", "unreachable", "198.51.100.0/24")
	p := spawnSluice(t, wrap, "--listeners", "1", "--bind-timeout", "1m")
	for _, tc := range []struct {
		dst string
		rep byte
	}{
		{"192.0.2.5:21", 0x03},
		{"198.51.100.7:21", 0x04},
	} {
		c, rep, bnd := bindClient(t, ns, p.addr, netip.MustParseAddrPort(tc.dst))
		if rep != tc.rep {
			t.Errorf("BIND %s: REP %#02x BND %x, want %#02x; log:\n%s", tc.dst, rep, bnd, tc.rep, p.log())
			continue
		}
		expectClosed(t, c)
	}
	c, rep, bnd := bindClient(t, ns, p.addr, netip.MustParseAddrPort("127.0.0.1:21"))
	if rep != 0 || len(bnd) != 6 {
		t.Fatalf("BIND 127.0.0.1:21: REP %#02x BND %x, want 0x00 and an IPv4 address", rep, bnd)
	}
	c.Close()
}
