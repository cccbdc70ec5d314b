package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sluice/handshake"
	"sluice/relay"
)

// udpEcho starts a UDP echo server on addr and counts what it receives.
func udpEcho(t *testing.T, network, addr string) (*net.UDPConn, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return pc.(*net.UDPConn), serveUDPEcho(t, pc.(*net.UDPConn))
}

// serveUDPEcho echoes every datagram pc receives (a socket opened
// elsewhere, in another network namespace say), counting them, until the
// test ends and closes it.
func serveUDPEcho(t *testing.T, pc *net.UDPConn) *atomic.Int64 {
	t.Cleanup(func() { pc.Close() })
	var got atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			got.Add(1)
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return &got
}

// associateUDP opens a control connection, asks for UDP ASSOCIATE with
// DST 0.0.0.0:0 and returns it with the relay address of the reply.
func associateUDP(t *testing.T, addr string) (*net.TCPConn, netip.AddrPort) {
	t.Helper()
	c := dialSluice(t, addr)
	relayAddr := requestOK(t, c, handshake.CmdUDPAssociate, handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	if relayAddr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("relay socket on %v, want the IP the client reached sluice on (127.0.0.1)", relayAddr)
	}
	return c, relayAddr
}

// udpClient returns a UDP socket on localIP connected to the relay.
func udpClient(t *testing.T, localIP string, relay netip.AddrPort) *net.UDPConn {
	t.Helper()
	u, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(localIP)}, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	u.SetDeadline(time.Now().Add(10 * time.Second))
	return u
}

// roundTrip sends payload to dst through the association and checks that
// the echo comes back wrapped with the destination's address.
func roundTrip(t *testing.T, u *net.UDPConn, dst handshake.Addr, payload []byte, wantFrom netip.AddrPort) {
	t.Helper()
	if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: dst}), payload...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	n, err := u.Read(buf)
	if err != nil {
		t.Fatalf("reading the echo from %v: %v", dst, err)
	}
	h, hl, err := handshake.ParseUDPHeader(buf[:n])
	if err != nil || h.Frag != 0 || h.Addr.AddrPort() != wantFrom {
		t.Fatalf("reply header %+v (%v), want from %v", h, err, wantFrom)
	}
	if !bytes.Equal(buf[hl:n], payload) {
		t.Fatalf("echo payload %d bytes, want %d", n-hl, len(payload))
	}
}

// TestUDPAssociate relays datagrams to IPv4, IPv6 and domain destinations,
// drops fragments and strangers, and ends with the control connection.
func TestUDPAssociate(t *testing.T) {
	t.Parallel()
	echo4, got4 := udpEcho(t, "udp4", "127.0.0.1:0")
	echo6, _ := udpEcho(t, "udp6", "[::1]:0")
	e4 := echo4.LocalAddr().(*net.UDPAddr).AddrPort()
	e6 := echo6.LocalAddr().(*net.UDPAddr).AddrPort()
	addr, _ := startSluice(t)
	c, relay := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relay)

	big := bytes.Repeat([]byte{0xa5}, 1400)
	roundTrip(t, u, handshake.AddrFromAddrPort(e4), []byte("ipv4"), e4)
	roundTrip(t, u, handshake.AddrFromAddrPort(e6), []byte("ipv6"), e6)
	roundTrip(t, u, handshake.Addr{Type: handshake.AddrDomain, Name: []byte("localhost"), Port: e4.Port()}, []byte("domain"), e4)
	roundTrip(t, u, handshake.AddrFromAddrPort(e4), big, e4)

	// A fragment is dropped: the next whole datagram's echo is the next read.
	before := got4.Load()
	frag := append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Frag: 1, Addr: handshake.AddrFromAddrPort(e4)}), "fragment"...)
	if _, err := u.Write(frag); err != nil {
		t.Fatal(err)
	}
	// A stranger (another source IP) is dropped too.
	stranger := udpClient(t, "127.0.0.2", relay)
	if _, err := stranger.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.AddrFromAddrPort(e4)}), "stranger"...)); err != nil {
		t.Fatal(err)
	}
	// So is a datagram from the client's IP but another port than its first.
	otherPort := udpClient(t, "127.0.0.1", relay)
	if _, err := otherPort.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.AddrFromAddrPort(e4)}), "other port"...)); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, u, handshake.AddrFromAddrPort(e4), []byte("after"), e4)
	if n := got4.Load() - before; n != 1 {
		t.Fatalf("the echo server got %d datagrams, want 1: fragment, stranger and other port must be dropped", n)
	}

	// Closing the control connection ends the association: the relay socket
	// closes, and a datagram to it draws an ICMP port unreachable.
	c.Close()
	closed := waitFor(5*time.Second, func() bool {
		u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.AddrFromAddrPort(e4)}), "late"...))
		u.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := u.Read(make([]byte, 100))
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	if !closed {
		t.Fatal("relay socket still open after the control connection closed")
	}
}

// TestUDPAssociateDstPort: a non-zero DST.PORT in the request fixes the
// client's port for the association, whatever type DST.ADDR has (RFC 1928
// section 7: the address and port the client will send from; the address
// is not trusted, a name included): a datagram from another port of the
// client's IP is dropped even when it comes first, and the given port's go
// through.
func TestUDPAssociateDstPort(t *testing.T) {
	t.Parallel()
	echo, got := udpEcho(t, "udp4", "127.0.0.1:0")
	e := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	addr, _ := startSluice(t)
	for _, tc := range []struct {
		name string
		dst  func(port uint16) handshake.Addr
	}{
		{"ipv4", func(port uint16) handshake.Addr {
			return handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
		}},
		{"domain", func(port uint16) handshake.Addr {
			return handshake.Addr{Type: handshake.AddrDomain, Name: []byte("client.invalid"), Port: port}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mine, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer mine.Close()
			mine.SetDeadline(time.Now().Add(10 * time.Second))
			c := dialSluice(t, addr)
			defer c.Close()
			dst := tc.dst(mine.LocalAddr().(*net.UDPAddr).AddrPort().Port())
			relayAddr := requestOK(t, c, handshake.CmdUDPAssociate, dst)
			datagram := func(payload string) []byte {
				return append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.AddrFromAddrPort(e)}), payload...)
			}
			before := got.Load()
			other := udpClient(t, "127.0.0.1", relayAddr) // the client's IP, another port, first
			if _, err := other.Write(datagram("other port")); err != nil {
				t.Fatal(err)
			}
			if _, err := mine.WriteToUDPAddrPort(datagram("mine"), relayAddr); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			n, from, err := mine.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("no echo on the port DST.PORT named: %v", err)
			}
			if from != relayAddr || !bytes.HasSuffix(buf[:n], []byte("mine")) {
				t.Fatalf("got %q from %v, want the echo of \"mine\" from %v", buf[:n], from, relayAddr)
			}
			if n := got.Load() - before; n != 1 {
				t.Fatalf("the echo server got %d datagrams, want 1: the other port's must be dropped", n)
			}
		})
	}
}

// TestUDPIdleTimeout checks that an association with no traffic ends after
// the UDP idle timeout, closing its control connection.
func TestUDPIdleTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--udp-idle-timeout", "300ms")
	start := time.Now() // before the request: the idle timeout starts after it
	c, _ := associateUDP(t, addr)
	expectClosed(t, c)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("association ended after %v, before the 300ms idle timeout", d)
	}
}

// TestUDPFilter: a datagram that reaches the association's upstream socket
// from a source the client never sent to is dropped by default
// (--udp-filter addr-port) and relayed with its source's address under
// --udp-filter none. The target's reply, sent after it, marks the end:
// loopback keeps their order.
func TestUDPFilter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag string
		want []string
	}{{"addr-port", []string{"reply"}}, {"none", []string{"stranger", "reply"}}} {
		t.Run(tc.flag, func(t *testing.T) {
			t.Parallel()
			target, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer target.Close()
			target.SetDeadline(time.Now().Add(10 * time.Second))
			addr, _ := startSluice(t, "--udp-filter", tc.flag)
			_, relay := associateUDP(t, addr)
			u := udpClient(t, "127.0.0.1", relay)
			dst := handshake.AddrFromAddrPort(target.LocalAddr().(*net.UDPAddr).AddrPort())
			if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: dst}), "hello"...)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			_, upstream, err := target.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			defer stranger.Close()
			if _, err := stranger.WriteToUDPAddrPort([]byte("stranger"), upstream); err != nil {
				t.Fatal(err)
			}
			if _, err := target.WriteToUDPAddrPort([]byte("reply"), upstream); err != nil {
				t.Fatal(err)
			}
			var got []string
			for len(got) == 0 || got[len(got)-1] != "reply" {
				n, err := u.Read(buf)
				if err != nil {
					t.Fatalf("client read after %q: %v", got, err)
				}
				h, hl, err := handshake.ParseUDPHeader(buf[:n])
				if err != nil {
					t.Fatal(err)
				}
				want := target.LocalAddr().(*net.UDPAddr).AddrPort()
				if string(buf[hl:n]) == "stranger" {
					want = stranger.LocalAddr().(*net.UDPAddr).AddrPort()
				}
				if h.Addr.AddrPort() != want {
					t.Errorf("%q came with source %v, want %v", buf[hl:n], h.Addr.AddrPort(), want)
				}
				got = append(got, string(buf[hl:n]))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("the client got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUDPNameRetry checks an association's name cache: a name that did not
// resolve is looked up again once its retry time has come, not before (5 s
// after a quick failure, three times the lookup's time after a slow one),
// and a name that resolved stays cached.
func TestUDPNameRetry(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		now     = time.Unix(1_000_000, 0)
		slow    time.Duration // the fake clock moves this much per DNS query while failing
		failing = true
		queries int
	)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	nx := dnsServer(t, serveNXDOMAIN)
	ok := dnsServer(t, func(pc net.PacketConn) { serveFixed(pc, [4]byte{127, 0, 0, 9}, nil) })
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		mu.Lock()
		queries++
		to := ok
		if failing {
			to = nx
			now = now.Add(slow)
		}
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "udp", to)
	}}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return queries
	}
	k := &socksCodec{resolver: r, timeout: 5 * time.Second, now: clock}
	dgram := append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{
		Addr: handshake.Addr{Type: handshake.AddrDomain, Name: []byte("svc.example"), Port: 53}}), "payload"...)
	decode := func(wantLookup bool, want relay.Drop) {
		t.Helper()
		before := count()
		to, rest, drop := k.Decode(context.Background(), dgram)
		if looked := count() > before; looked != wantLookup {
			t.Fatalf("looked the name up: %v, want %v", looked, wantLookup)
		}
		if drop != want {
			t.Fatalf("drop %v, want %v", drop, want)
		}
		if want == relay.Relayed && (to != netip.MustParseAddrPort("127.0.0.9:53") || string(rest) != "payload") {
			t.Fatalf("relayed to %v with %q, want 127.0.0.9:53 with %q", to, rest, "payload")
		}
	}

	// A quick failure is kept for unresolvedRetry.
	decode(true, relay.DropUnresolved)
	decode(false, relay.DropUnresolved)
	advance(unresolvedRetry - time.Nanosecond)
	decode(false, relay.DropUnresolved)
	advance(time.Nanosecond)
	decode(true, relay.DropUnresolved)

	// A slow failure is kept three times as long as its lookup took.
	advance(unresolvedRetry)
	mu.Lock()
	slow = 2 * time.Second
	mu.Unlock()
	before := count()
	decode(true, relay.DropUnresolved)
	took := time.Duration(count()-before) * 2 * time.Second
	advance(3*took - time.Nanosecond)
	decode(false, relay.DropUnresolved)
	advance(time.Nanosecond)

	// Once it resolves, it stays: no lookup for the association's life.
	mu.Lock()
	failing = false
	mu.Unlock()
	decode(true, relay.Relayed)
	advance(time.Hour)
	decode(false, relay.Relayed)
}

// TestControlResetBeforeAdoption: clients that reset right after a UDP
// ASSOCIATE or BIND request, while the server adopts their bare socket into
// package net (which then knows no peer address: getpeername fails), end
// their sessions without taking the server down, logs at debug level
// included (the client's address comes from accept). Fifty of each: the
// reset must land between the request's read and the adoption at least
// once. Not parallel: it counts the whole process.
func TestControlResetBeforeAdoption(t *testing.T) {
	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "127.0.0.1:0", "--bind", "--access-log=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = nxdomainResolver(t)
	var buf syncBuffer
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	addr := inst.addrs()[0]
	zero := handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	noLeak(t, func(t *testing.T) {
		for _, cmd := range []handshake.Command{handshake.CmdUDPAssociate, handshake.CmdBind} {
			for range 50 {
				c := dialSluice(t, addr)
				mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, cmd, zero))
				c.SetLinger(0)
				c.Close()
			}
		}
		// Still serving.
		c, _ := associateUDP(t, addr)
		c.Close()
	})
}

// TestUDPAccessLogDenied: an association's access line counts the datagrams
// the destination rules refused in denied only, and dropped counts the
// others (here a malformed one), as the metrics split them into not_allowed
// and the relay's reasons.
func TestUDPAccessLogDenied(t *testing.T) {
	t.Parallel()
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	udenied, udeniedGot := udpEcho(t, "udp4", "127.0.0.1:0")
	denied := handshake.AddrFromAddrPort(udenied.LocalAddr().(*net.UDPAddr).AddrPort())
	cfg := writeConfig(t, fmt.Sprintf("[[rule]]\naction = \"deny\"\ncommands = [\"udp\"]\nports = [\"%d\"]\n", denied.Port))
	var log syncBuffer
	addr, _ := startSluiceLog(t, &log, "--config", cfg)
	c, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	allowed := handshake.AddrFromAddrPort(uecho.LocalAddr().(*net.UDPAddr).AddrPort())
	roundTrip(t, u, allowed, []byte("first"), allowed.AddrPort()) // fixes the client's port
	if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: denied}), "denied"...)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte{0, 0, 0, 9, 1, 2, 3}); err != nil { // ATYP 9: malformed
		t.Fatal(err)
	}
	// Decoded in order: once this echo is back, so were the two before.
	roundTrip(t, u, allowed, []byte("last"), allowed.AddrPort())
	c.Close()
	line := udpAccessLine(t, &log)
	for _, want := range []string{"datagrams_up=2", "dropped=1", "denied=1"} {
		if !slices.Contains(strings.Fields(line), want) {
			t.Errorf("access line lacks %s: %s", want, line)
		}
	}
	if n := udeniedGot.Load(); n != 0 {
		t.Errorf("denied destination got %d datagrams", n)
	}
}

// udpAccessLine waits up to 10 s for the access line of a UDP association
// in log and returns it.
func udpAccessLine(t *testing.T, log *syncBuffer) string {
	t.Helper()
	var line string
	if !waitFor(10*time.Second, func() bool {
		for l := range strings.Lines(log.String()) {
			if strings.Contains(l, "cmd=udp_associate") {
				line = l
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no access line for the association; log:\n%s", log.String())
	}
	return line
}

// TestUDPSourceAddrFamily: with --source-addr the upstream socket has one
// family, and a name with addresses of both goes to the address of that
// family, as CONNECT dials it (dialName); with an IPv6 source, picking the
// IPv4 address sent every datagram to a name into a refused send. An
// IPv4-mapped source is an IPv4 one, as for CONNECT: as given, it made a
// v6-only socket that the kernel would not bind (EINVAL), and every UDP
// ASSOCIATE got 0x01.
func TestUDPSourceAddrFamily(t *testing.T) {
	t.Parallel()
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	for _, tc := range []struct{ source, echo string }{
		{"::1", "[::1]:0"},
		{"::ffff:127.0.0.1", "127.0.0.1:0"},
	} {
		t.Run(tc.source, func(t *testing.T) {
			t.Parallel()
			echo, _ := udpEcho(t, "udp", tc.echo)
			e := echo.LocalAddr().(*net.UDPAddr).AddrPort()
			var log syncBuffer
			addr, _ := startSluiceResolver(t, r, &log, "--source-addr", tc.source)
			_, relayAddr := associateUDP(t, addr)
			u := udpClient(t, "127.0.0.1", relayAddr)
			u.SetDeadline(time.Now().Add(5 * time.Second)) // safety net only
			roundTrip(t, u, handshake.AddrFromAddrPort(e), []byte("literal"), e)
			roundTrip(t, u, handshake.Addr{Type: handshake.AddrDomain, Name: []byte("dual.example"), Port: e.Port()}, []byte("name"), e)
		})
	}
}

// TestUDPNameCacheFull: past maxCachedNames names a new name still gets
// cached (in some other name's place), so that it is not looked up again
// for every datagram, each lookup holding the association's datagrams.
func TestUDPNameCacheFull(t *testing.T) {
	t.Parallel()
	var queries atomic.Int64
	dns := dnsServer(t, func(pc net.PacketConn) { serveFixed(pc, [4]byte{127, 0, 0, 9}, nil) })
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		queries.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	k := &socksCodec{resolver: r, timeout: 5 * time.Second}
	decode := func(name string) {
		t.Helper()
		b := append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{
			Addr: handshake.Addr{Type: handshake.AddrDomain, Name: []byte(name), Port: 53}}), "payload"...)
		if to, _, drop := k.Decode(context.Background(), b); drop != relay.Relayed || to != netip.MustParseAddrPort("127.0.0.9:53") {
			t.Fatalf("%s: relayed to %v (drop %v), want 127.0.0.9:53", name, to, drop)
		}
	}
	for i := range maxCachedNames {
		decode(fmt.Sprintf("n%d.example", i))
	}
	decode("extra.example")
	before := queries.Load()
	decode("extra.example")
	decode("extra.example")
	if n := queries.Load() - before; n != 0 {
		t.Fatalf("%d DNS queries for a name just resolved, past the cache's bound; want 0", n)
	}
	if len(k.names) != maxCachedNames {
		t.Fatalf("cache holds %d names, want at most %d", len(k.names), maxCachedNames)
	}
}
