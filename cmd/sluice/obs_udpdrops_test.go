package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"sluice/handshake"
)

// TestObsUDPDropsLive: the datagrams an association drops show in
// sluice_udp_datagrams_dropped_total while it runs, each reason that the
// relay decides (stranger, fragment, malformed, unsolicited, send_failed
// at a batch's flush) and each that the codec does (unresolved,
// not_allowed), and are not counted a second
// time when it ends. They used to reach the metrics only at its end: an
// association that lived long and dropped everything showed nothing.
func TestObsUDPDropsLive(t *testing.T) {
	t.Parallel()
	target, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close() })
	target.SetDeadline(time.Now().Add(20 * time.Second)) // safety net
	denied, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	cfg := writeConfig(t, fmt.Sprintf("[[rule]]\naction = \"deny\"\nports = [\"%d\"]\n", denied.LocalAddr().(*net.UDPAddr).Port))
	addr, inst := startSluice(t, "--config", cfg, "--metrics", "127.0.0.1:0")
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	send := func(conn *net.UDPConn, b []byte) {
		t.Helper()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	dgram := func(a handshake.Addr, frag byte, payload string) []byte {
		return append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Frag: frag, Addr: a}), payload...)
	}

	// A datagram relayed: the client's port is now the association's, and
	// the target learns the address of the relay's upstream socket.
	tap := target.LocalAddr().(*net.UDPAddr).AddrPort()
	send(u, dgram(handshake.AddrFromAddrPort(tap), 0, "first"))
	buf := make([]byte, 1500)
	if _, _, err := target.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatalf("the target never got the first datagram: %v", err)
	}
	// -> each reason once
	send(u, dgram(handshake.AddrFromAddrPort(tap), 1, "fragment"))
	send(u, []byte{0, 0, 0, 9, 1, 2}) // malformed: no such ATYP
	send(u, dgram(domainAddr("nx.example", 9), 0, "unresolved"))
	send(u, dgram(handshake.AddrFromAddrPort(denied.LocalAddr().(*net.UDPAddr).AddrPort()), 0, "not allowed"))
	send(udpClient(t, "127.0.0.1", relayAddr), dgram(handshake.AddrFromAddrPort(tap), 0, "stranger"))
	// The kernel refuses port 0 (EINVAL), at the flush of a sendmmsg
	// batch: send_failed.
	send(u, dgram(handshake.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")), 0, "send failed"))
	// <- to the relay's upstream socket, whose address a second datagram
	// tells, from a port the client never sent to: unsolicited.
	send(u, dgram(handshake.AddrFromAddrPort(tap), 0, "second"))
	_, up, err := target.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the target never got the second datagram: %v", err)
	}
	other, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(up))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	send(other, []byte("unsolicited"))

	want := map[string]float64{"stranger": 1, "fragment": 1, "malformed": 1, "unresolved": 1, "not_allowed": 1, "unsolicited": 1, "no_client": 0, "send_failed": 1}
	drops := func() map[string]float64 {
		mfs := scrape(t, maddr)
		got := make(map[string]float64, len(want))
		for reason := range want {
			got[reason] = value(mfs, "sluice_udp_datagrams_dropped_total", "reason", reason)
		}
		return got
	}
	same := func(got map[string]float64) bool {
		for reason, n := range want {
			if got[reason] != n {
				return false
			}
		}
		return true
	}
	var got map[string]float64
	if !waitFor(10*time.Second, func() bool { got = drops(); return same(got) }) {
		t.Fatalf("while the association runs: dropped %v, want %v", got, want)
	}

	c.Close()
	if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
		t.Fatal("the association did not end")
	}
	if got = drops(); !same(got) {
		t.Errorf("after the association ended: dropped %v, want %v (counted once, as dropped)", got, want)
	}
}
