package main

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// bindRequest sends greeting + BIND for DST.ADDR want:0 and returns the
// address of the first reply (where sluice listens for the peer).
func bindRequest(t *testing.T, addr string, want netip.Addr) (*net.TCPConn, netip.AddrPort) {
	t.Helper()
	c := dialSluice(t, addr)
	return c, requestOK(t, c, handshake.CmdBind, handshake.AddrFromAddrPort(netip.AddrPortFrom(want, 0)))
}

// TestBind runs the whole two-reply BIND exchange with a raw client, then
// moves data both ways with half-close.
func TestBind(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t)
	c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	if !listening.Addr().IsLoopback() || listening.Port() == 0 {
		t.Fatalf("first reply announces %v, want a loopback address and port", listening)
	}
	peer, err := net.Dial("tcp", listening.String())
	if err != nil {
		t.Fatalf("peer dial %v: %v", listening, err)
	}
	defer peer.Close()
	rep, bnd := readReply(t, c) // <- second reply: the peer's address
	pa := peer.LocalAddr().(*net.TCPAddr)
	if want := append(pa.IP.To4(), byte(pa.Port>>8), byte(pa.Port)); rep != 0 || !bytes.Equal(bnd, want) {
		t.Fatalf("second reply REP %#02x BND %x, want 0x00 %x", rep, bnd, want)
	}
	mustWrite(t, peer, []byte("from peer"))
	expect(t, c, []byte("from peer"))
	mustWrite(t, c, []byte("from client"))
	c.CloseWrite()
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != "from client" {
		t.Fatalf("peer read %q, %v; want %q then EOF", got, err, "from client")
	}
	mustWrite(t, peer, []byte("after half-close"))
	peer.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "after half-close" {
		t.Fatalf("client read %q, %v", got, err)
	}
}

// TestBindFailures checks timeout (0x06), alone and after a peer from the
// wrong address, which is closed unanswered (it got 0x02 and ended the
// BIND: TestBindWrongPeerWaits): in each case the listening socket closes.
// TestBindWait has the client that leaves.
func TestBindFailures(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--bind-timeout", "300ms")
	lo := netip.MustParseAddr("127.0.0.1")
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		c, listening := bindRequest(t, addr, lo)
		if rep, _ := readReply(t, c); rep != 0x06 {
			t.Fatalf("second reply REP %#02x, want 0x06 (TTL expired)", rep)
		}
		expectClosed(t, c)
		expectRefused(t, listening)
	})
	t.Run("wrong-peer", func(t *testing.T) {
		t.Parallel()
		c, listening := bindRequest(t, addr, lo)
		refusedPeer(t, "127.0.0.3", listening)
		if rep, _ := readReply(t, c); rep != 0x06 {
			t.Fatalf("second reply REP %#02x, want 0x06 (TTL expired): the wrong peer does not end the wait", rep)
		}
		expectClosed(t, c)
		expectRefused(t, listening)
	})
}

// TestBindWait: a client that sends bytes while BIND waits for its peer
// has them relayed to the peer once it comes; one that leaves, with or
// without sending first, is noticed at once, not at the end of
// --bind-timeout (a minute here): the session's slot is given back and the
// listening socket closes.
func TestBindWait(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	addr, inst := startSluiceLog(t, &log, "--bind-timeout", "1m")
	idle := func(t *testing.T) {
		t.Helper()
		if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
			t.Fatalf("%d sessions still held", inst.srv.limits.active.Load())
		}
	}
	t.Run("sends-then-peer", func(t *testing.T) {
		c, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
		mustWrite(t, c, []byte("early"))
		peer, err := net.Dial("tcp", listening.String())
		if err != nil {
			t.Fatalf("peer dial %v: %v", listening, err)
		}
		defer peer.Close()
		if rep, _ := readReply(t, c); rep != 0 {
			t.Fatalf("second reply REP %#02x, want 0x00", rep)
		}
		expect(t, peer, []byte("early"))
		c.Close()
		peer.Close()
		idle(t)
	})
	for _, early := range []string{"", "early"} {
		t.Run("leaves/sent="+strconv.Itoa(len(early)), func(t *testing.T) {
			c, listening := bindRequest(t, addr, netip.IPv4Unspecified())
			if early != "" {
				mustWrite(t, c, []byte(early))
			}
			c.Close()
			// The slot first: a probe of the listening socket would
			// connect as the peer and end the wait itself.
			idle(t)
			expectRefused(t, listening)
			// Nobody to reply to: the access line says no reply.
			line := "client=" + c.LocalAddr().String() + " "
			if !waitFor(10*time.Second, func() bool { return strings.Contains(log.String(), line) }) {
				t.Fatalf("no access line for %s; log:\n%s", c.LocalAddr(), log.String())
			}
			for l := range strings.Lines(log.String()) {
				if strings.Contains(l, line) && !strings.Contains(l, "reply=none") {
					t.Errorf("access line %q, want reply=none", l)
				}
			}
		})
	}
}

// TestBindMappedZeros: DST.ADDR ::ffff:0.0.0.0 (ATYP 4) is the all-zeros
// address, as 0.0.0.0 is: any peer may connect (it was taken for a peer
// that must come from 0.0.0.0, and every peer got 0x02).
func TestBindMappedZeros(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t)
	c := dialSluice(t, addr)
	mapped := netip.AddrFrom16(netip.IPv4Unspecified().As16()) // ::ffff:0.0.0.0, ATYP 4
	listening := requestOK(t, c, handshake.CmdBind, handshake.Addr{Type: handshake.AddrIPv6, IP: mapped})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	peer, err := d.Dial("tcp", listening.String())
	if err != nil {
		t.Fatalf("peer dial %v: %v", listening, err)
	}
	defer peer.Close()
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("second reply REP %#02x, want 0x00: any peer may come", rep)
	}
}

// expectRefused waits until nothing listens on a anymore.
func expectRefused(t *testing.T, a netip.AddrPort) {
	t.Helper()
	ok := waitFor(5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", a.String(), time.Second)
		if err == nil {
			c.Close()
			return false
		}
		return true
	})
	if !ok {
		t.Fatalf("%v still accepts connections", a)
	}
}

// TestBindDeniedBeforeListening: under rules that let no BIND peer through
// (a default deny with allow rules for CONNECT only, or a deny of every
// BIND), a BIND to 0.0.0.0 or to a name gets 0x02 at once, with no
// listening socket and no first 0x00; it used to listen for the whole
// --bind-timeout and refuse only the peer that came.
func TestBindDeniedBeforeListening(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, rules string }{
		{"default-deny", "default-policy = \"deny\"\n[[rule]]\naction = \"allow\"\ncommands = [\"connect\"]\n"},
		{"deny-bind", "[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := startSluice(t, "--config", writeConfig(t, tc.rules), "--bind-timeout", "1m")
			for _, dst := range []handshake.Addr{
				handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)),
				domainAddr("peer.test", 0),
			} {
				c, rep := request(t, addr, handshake.CmdBind, dst)
				if rep != 0x02 {
					t.Fatalf("BIND %v: first REP %#02x, want 0x02", dst, rep)
				}
				expectClosed(t, c)
			}
		})
	}
}
