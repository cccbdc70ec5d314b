package main

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"sluice/handshake"
)

// TestConnectNameAsSent: the name a CONNECT names reaches the resolver byte
// for byte as the rules saw it, with bare sockets and with --net-sockets
// alike. --net-sockets without address rules gave the name to net.Dialer as
// host:port text, whose SplitHostPort read "[evil.test]:80" as evil.test:
// the rules saw "[evil.test]", which a deny of evil.test does not match, and
// sluice connected to evil.test (0x00). A name in brackets is no host name,
// so the resolver finds nothing: 0x04, as with bare sockets, which also
// answered "[127.0.0.1]" with 0x04 where --net-sockets dialled 127.0.0.1.
func TestConnectNameAsSent(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := echo.Addr().(*net.TCPAddr).Port
	r := fixedResolver(t, netip.MustParseAddr("127.0.0.1")) // every name is 127.0.0.1
	rules := writeConfig(t, "[[rule]]\naction = \"deny\"\ndomains = [\"evil.test\"]\n")
	for name, args := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var log syncBuffer
			addr, _ := startSluiceResolver(t, r, &log, append([]string{"--config", rules}, args...)...)
			for _, tc := range []struct {
				name string
				rep  byte
			}{
				{"ok.test", 0x00},
				{"evil.test", 0x02},
				{"EVIL.test.", 0x02},
				{"[evil.test]", 0x04},
				{"[127.0.0.1]", 0x04},
				{"127.0.0.1", 0x00},
			} {
				c, rep := request(t, addr, handshake.CmdConnect, domainAddr(tc.name, port))
				c.Close()
				if rep != tc.rep {
					t.Errorf("CONNECT %q: REP %#02x, want %#02x", tc.name, rep, tc.rep)
				}
			}
		})
	}
}

// TestBindSourceAddr: with --source-addr, BIND listens on it and its first
// reply names it, whatever DST.ADDR is of its family, all-zeros or a name:
// the peer is told the address the relay's connections come from, as
// Dante's external address is used for both. A server that checks that its
// data connection's address is the control connection's (active FTP's
// PORT, vsftpd's port_promiscuous=NO) refused the route's own source
// address, which sluice announced before (127.0.0.1 here). DST.ADDR of the
// other family, which no connection from the source can reach, keeps the
// route's address.
func TestBindSourceAddr(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--source-addr", "127.0.0.2", "--bind-timeout", "1m")
	src := netip.MustParseAddr("127.0.0.2")

	// A CONNECT comes from --source-addr: the address BIND must announce.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := dialSluice(t, addr)
	requestOK(t, c, handshake.CmdConnect, handshake.AddrFromAddrPort(l.Addr().(*net.TCPAddr).AddrPort()))
	up, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	if from := up.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); from != src {
		t.Fatalf("CONNECT came from %v, want --source-addr %v", from, src)
	}

	for _, dst := range []handshake.Addr{
		handshake.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.3:21")),
		handshake.AddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:0")),
		domainAddr("ftp.test", 21),
	} {
		c := dialSluice(t, addr)
		listening := requestOK(t, c, handshake.CmdBind, dst)
		if listening.Addr() != src {
			t.Errorf("BIND %v: first reply %v, want --source-addr %v", dst, listening, src)
			continue
		}
		peer := dialFrom(t, "127.0.0.3", listening)
		expectPeerReply(t, c, peer)
	}

	c = dialSluice(t, addr)
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdBind, handshake.AddrFromAddrPort(netip.MustParseAddrPort("[::1]:21"))))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	if ip, _ := netip.AddrFromSlice(bnd[:len(bnd)-2]); rep != 0 || ip != netip.IPv6Loopback() {
		t.Errorf("BIND [::1]:21 with an IPv4 --source-addr: REP %#02x BND %x, want 0x00 and ::1 (the route's)", rep, bnd)
	}
}

// TestBindLiteralName: a BIND whose DST.ADDR is a name that is an IP
// literal ("127.0.0.2", as some clients that resolve nothing send an
// address) is the BIND of that address: a peer from another address is
// reset unanswered and the wait goes on, and a rule that denies the
// address refuses it with 0x02 before listening. Taken for a name, the
// stranger was let in as the peer (0x00), and the denial came only per
// peer, after a first 0x00.
func TestBindLiteralName(t *testing.T) {
	t.Parallel()
	t.Run("peer", func(t *testing.T) {
		t.Parallel()
		addr, _ := startSluice(t, "--bind-timeout", "1m")
		c := dialSluice(t, addr)
		listening := requestOK(t, c, handshake.CmdBind, domainAddr("127.0.0.2", 21))
		stranger := dialFromMay(t, "127.0.0.3", listening)
		if stranger != nil {
			stranger.SetReadDeadline(time.Now().Add(10 * time.Second)) // let in, it would wait
			var b [1]byte
			if n, err := stranger.Read(b[:]); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("peer from 127.0.0.3 for DST.ADDR \"127.0.0.2\": read %d, %v; want it reset", n, err)
			}
		}
		peer := dialFrom(t, "127.0.0.2", listening)
		expectPeerReply(t, c, peer)
		mustWrite(t, peer, []byte("peer"))
		expect(t, c, []byte("peer"))
	})
	t.Run("denied", func(t *testing.T) {
		t.Parallel()
		rules := writeConfig(t, "[[rule]]\naction = \"deny\"\ncommands = [\"bind\"]\ncidr = [\"127.0.0.2/32\"]\n")
		addr, _ := startSluice(t, "--config", rules, "--bind-timeout", "1m")
		for _, name := range []string{"127.0.0.2", "::ffff:127.0.0.2"} {
			c, rep := request(t, addr, handshake.CmdBind, domainAddr(name, 21))
			if rep != 0x02 {
				t.Errorf("BIND %q under a deny of 127.0.0.2/32: first REP %#02x, want 0x02", name, rep)
				continue
			}
			expectClosed(t, c)
		}
	})
}

// dialFromMay is dialFrom for a peer that sluice may reset before the dial
// returns: nil then.
func dialFromMay(t *testing.T, src string, a netip.AddrPort) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", a.String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatalf("peer dial from %s to %v: %v", src, a, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}
