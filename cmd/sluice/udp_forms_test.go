package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"sluice/handshake"
	"sluice/relay"
)

// TestUDPMappedReplyForm: a reply is named as the client named its source.
// An IPv4 destination the client sent to as IPv4-mapped IPv6 (ATYP 4,
// ::ffff:127.0.0.1) answers with that header, where it used to answer with
// ATYP 1 127.0.0.1, which a client matching replies against the address it
// sent to drops; the form follows the client's latest datagram to the
// address, and an IPv4 destination named as one still answers as one.
func TestUDPMappedReplyForm(t *testing.T) {
	t.Parallel()
	echo, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	e := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	mapped := handshake.Addr{Type: handshake.AddrIPv6, IP: netip.AddrFrom16(e.Addr().As16()), Port: e.Port()}
	ipv4 := handshake.AddrFromAddrPort(e)
	addr, _ := startSluice(t)
	_, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	buf := make([]byte, 2048)
	for _, tc := range []struct {
		name string
		dst  handshake.Addr
	}{{"mapped", mapped}, {"ipv4", ipv4}, {"mapped again", mapped}} {
		hdr := handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: tc.dst})
		if _, err := u.Write(append(hdr, tc.name...)); err != nil {
			t.Fatal(err)
		}
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("%s: reading the echo: %v", tc.name, err)
		}
		// The echo's source is the destination: its header is the one sent.
		if want := append(hdr, tc.name...); !bytes.Equal(buf[:n], want) {
			t.Errorf("%s: the client got % x, want % x (the header it sent to)", tc.name, buf[:n], want)
		}
	}
}

// TestUDPFragmentFirst: FRAG is the first field Decode judges, after RSV.
// A fragment is dropped as a fragment whatever follows its FRAG byte (an
// address type sluice does not know, a truncated address, nothing), where
// one with an unknown ATYP used to count as malformed.
func TestUDPFragmentFirst(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		b    []byte
		want relay.Drop
	}{
		{"fragment, ATYP 9", []byte{0, 0, 1, 9, 1, 2, 3, 4, 0, 53, 'x'}, relay.DropFragment},
		{"fragment, IPv4 cut short", []byte{0, 0, 2, 1, 127, 0}, relay.DropFragment},
		{"fragment, empty name", []byte{0, 0, 3, 3, 0, 0, 53}, relay.DropFragment},
		{"fragment, no ATYP", []byte{0, 0, 0x80}, relay.DropFragment},
		{"fragment, IPv4", []byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 53, 'x'}, relay.DropFragment},
		{"ATYP 9", []byte{0, 0, 0, 9, 1, 2, 3, 4, 0, 53, 'x'}, relay.DropMalformed},
		{"RSV not zero", []byte{0, 1, 1, 1, 127, 0, 0, 1, 0, 53, 'x'}, relay.DropMalformed},
		{"short", []byte{0, 0}, relay.DropMalformed},
	} {
		k := &socksCodec{}
		if _, _, drop := k.Decode(context.Background(), tc.b); drop != tc.want {
			t.Errorf("%s: % x dropped as %v, want %v", tc.name, tc.b, drop, tc.want)
		}
	}
}

// TestUDPFragmentMetric: a fragment with an unknown ATYP is counted under
// sluice_udp_datagrams_dropped_total{reason="fragment"}, not "malformed".
func TestUDPFragmentMetric(t *testing.T) {
	t.Parallel()
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	e := uecho.LocalAddr().(*net.UDPAddr).AddrPort()
	addr, inst := startSluice(t, "--metrics", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	maddr, err := serveMetrics(ctx, "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	roundTrip(t, u, handshake.AddrFromAddrPort(e), []byte("first"), e)
	if _, err := u.Write([]byte{0, 0, 1, 9, 1, 2, 3, 4, 0, 53, 'x'}); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, u, handshake.AddrFromAddrPort(e), []byte("last"), e) // decoded in order: the fragment was
	c.Close()
	var frag, malformed float64
	if !waitFor(10*time.Second, func() bool {
		mfs := scrape(t, maddr)
		frag = value(mfs, "sluice_udp_datagrams_dropped_total", "reason", "fragment")
		malformed = value(mfs, "sluice_udp_datagrams_dropped_total", "reason", "malformed")
		return frag+malformed > 0
	}) {
		t.Fatal("the association's drops were not counted in 10s")
	}
	if frag != 1 || malformed != 0 {
		t.Errorf("dropped fragment=%v malformed=%v, want 1 and 0", frag, malformed)
	}
}

// TestUDPHalfCloseEnds: a client that half-closes its control connection
// (FIN) ends its association, as one that closes it does: a FIN cannot be
// told from a client that left, and RFC 1928 ties the association to the
// connection. sluice closes the relay socket, then the control connection.
func TestUDPHalfCloseEnds(t *testing.T) {
	t.Parallel()
	echo, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	e := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	addr, _ := startSluice(t)
	c, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	roundTrip(t, u, handshake.AddrFromAddrPort(e), []byte("before"), e)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // safety net only
	expectClosed(t, c)
	// The relay socket closed before the control connection did: a
	// datagram to it draws an ICMP port unreachable.
	if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.AddrFromAddrPort(e)}), "late"...)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Read(make([]byte, 100)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after the association ended: %v; want ECONNREFUSED, the relay socket closed", err)
	}
}

// TestUDPMappedNoAlloc: the codec's steady path allocates nothing when the
// client names destinations IPv4-mapped either: Decode finds the address
// recorded, and Encode writes the ATYP 4 header in place. Not parallel:
// AllocsPerRun counts every goroutine's allocations.
func TestUDPMappedNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need the race detector off")
	}
	dst := netip.MustParseAddrPort("[::ffff:192.0.2.1]:53")
	msg := append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: handshake.Addr{Type: handshake.AddrIPv6, IP: dst.Addr(), Port: dst.Port()}}), "payload"...)
	k := &socksCodec{}
	buf := make([]byte, 64)
	src := netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	var start int
	var drop relay.Drop
	round := func() {
		_, _, drop = k.Decode(context.Background(), msg)
		start = k.Encode(buf, k.Headroom(), src)
	}
	round() // the first datagram records the address
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 || drop != relay.Relayed || !bytes.Equal(buf[start:k.Headroom()], msg[:len(msg)-len("payload")]) {
		t.Fatalf("%v allocs per datagram, drop %v, header % x; want 0, relayed, % x", allocs, drop, buf[start:k.Headroom()], msg[:len(msg)-len("payload")])
	}
}
