package main

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sluice/handshake"
)

// dialFrom connects to a from the loopback address src, as a BIND's peer.
func dialFrom(t *testing.T, src string, a netip.AddrPort) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", a.String())
	if err != nil {
		t.Fatalf("peer dial from %s to %v: %v", src, a, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// refusedPeer connects to a from src as a BIND peer that sluice refuses,
// and returns once sluice has closed it: the reset may come before the dial
// returns, failing it.
func refusedPeer(t *testing.T, src string, a netip.AddrPort) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", a.String())
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("peer dial from %s to %v: %v", src, a, err)
	}
	defer c.Close()
	expectClosed(t, c)
}

// expectPeerReply reads a BIND's second reply and wants 0x00 with the
// address of peer.
func expectPeerReply(t *testing.T, c net.Conn, peer net.Conn) {
	t.Helper()
	rep, bnd := readReply(t, c)
	pa := peer.LocalAddr().(*net.TCPAddr)
	if want := append(pa.IP.To4(), byte(pa.Port>>8), byte(pa.Port)); rep != 0 || !bytes.Equal(bnd, want) {
		t.Fatalf("second reply REP %#02x BND %x, want 0x00 %x", rep, bnd, want)
	}
}

// TestBindWrongPeerWaits: a peer that is not the one the client named is
// closed and not answered, and the BIND goes on waiting for the right one.
// The first connection to the announced port ended the BIND with 0x02
// whoever made it, so anyone who could reach the port (a port scan) could
// cancel someone else's BIND: the second reply answers the anticipated
// connection only (RFC 1928). Each refused peer is counted as a
// destination_rule refusal.
func TestBindWrongPeerWaits(t *testing.T) {
	t.Parallel()
	addr, inst := startSluice(t, "--bind-timeout", "1m", "--metrics", "127.0.0.1:0")
	c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.2"))
	for i := range 3 {
		refusedPeer(t, "127.0.0.3", listening) // counted before it is closed
		if got := counter(t, inst.srv.metrics.refused[refDestRule]); got != float64(i+1) {
			t.Fatalf("refused as destination_rule after %d wrong peers: %v", i+1, got)
		}
	}
	// No reply for the wrong peers: the next the client reads is the
	// right peer's.
	peer := dialFrom(t, "127.0.0.2", listening)
	expectPeerReply(t, c, peer)
	mustWrite(t, peer, []byte("from peer"))
	expect(t, c, []byte("from peer"))
	mustWrite(t, c, []byte("from client"))
	expect(t, peer, []byte("from client"))
	c.Close()
	expectClosed(t, peer)
	expectRefused(t, listening)
	if got := counter(t, inst.srv.metrics.refused[refDestRule]); got != 3 {
		t.Errorf("refused as destination_rule: %v, want 3", got)
	}
}

// TestBindWrongPeerTimeout: with only wrong peers the BIND ends at
// --bind-timeout with 0x06, as with no peer at all, and its access line
// counts the peers refused.
func TestBindWrongPeerTimeout(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	addr, _ := startSluiceLog(t, &log, "--bind-timeout", "2s")
	c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.2"))
	for range 2 {
		refusedPeer(t, "127.0.0.3", listening)
	}
	if rep, _ := readReply(t, c); rep != 0x06 {
		t.Fatalf("second reply REP %#02x, want 0x06 (TTL expired)", rep)
	}
	expectClosed(t, c)
	expectRefused(t, listening)
	line := "client=" + c.LocalAddr().String() + " "
	if !waitFor(10*time.Second, func() bool { return strings.Contains(log.String(), line) }) {
		t.Fatalf("no access line for %s; log:\n%s", c.LocalAddr(), log.String())
	}
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, line) && (!strings.Contains(l, "reply=ttl") || !strings.Contains(l, "2 peers refused")) {
			t.Errorf("access line %q, want a TTL reply and 2 peers refused", l)
		}
	}
}

// TestBindRefusedPeerWaits: a peer the destination rules refuse (here a
// deny of 127.0.0.3 for bind, DST.ADDR 0.0.0.0: any peer the rules let in)
// does not end the BIND either.
func TestBindRefusedPeerWaits(t *testing.T) {
	t.Parallel()
	rules := "[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\ncidr = [\"127.0.0.3/32\"]\n"
	addr, _ := startSluice(t, "--config", writeConfig(t, rules), "--bind-timeout", "1m")
	c, listening := bindRequest(t, addr, netip.IPv4Unspecified())
	refusedPeer(t, "127.0.0.3", listening)
	peer := dialFrom(t, "127.0.0.2", listening)
	expectPeerReply(t, c, peer)
	mustWrite(t, peer, []byte("peer"))
	expect(t, c, []byte("peer"))
}

// TestBindNameLookupOnce: for a name in DST.ADDR whose domain rule lets in
// only the name's addresses, the name is looked up once per BIND, not once
// per peer: a flood of strangers costs no DNS traffic past the first.
func TestBindNameLookupOnce(t *testing.T) {
	t.Parallel()
	var queries atomic.Int64
	r := loopbackResolver(t, func(pc net.PacketConn) {
		serveFixed(countingPacketConn{pc, &queries}, netip.MustParseAddr("127.0.0.2").As4(), nil)
	})
	rules := "default-policy = \"deny\"\n[[rule]]\naction = \"allow\"\ncommands = [\"bind\"]\ndomains = [\"ftp.test\"]\n"
	var log syncBuffer
	addr, _ := startSluiceResolver(t, r, &log, "--config", writeConfig(t, rules), "--bind-timeout", "1m")
	c := dialSluice(t, addr)
	listening := requestOK(t, c, handshake.CmdBind, domainAddr("ftp.test", 21))
	refusedPeer(t, "127.0.0.3", listening)
	first := queries.Load()
	if first == 0 {
		t.Fatal("no DNS query for the first peer")
	}
	for range 5 {
		refusedPeer(t, "127.0.0.3", listening)
	}
	peer := dialFrom(t, "127.0.0.2", listening)
	expectPeerReply(t, c, peer)
	if got := queries.Load(); got != first {
		t.Errorf("%d DNS queries after 6 wrong peers and the right one, want %d (one lookup)", got, first)
	}
}

// countingPacketConn counts the packets read from a DNS server's socket.
type countingPacketConn struct {
	net.PacketConn
	n *atomic.Int64
}

func (c countingPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.n.Add(1)
	}
	return n, a, err
}
