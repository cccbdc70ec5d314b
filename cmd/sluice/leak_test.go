package main

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"sluice/handshake"
)

// TestNoLeaks runs 1,000 sessions through one sluice (successful relays,
// failed dials, clients that vanish mid-handshake or mid-relay, UDP
// associations, abandoned BINDs, garbage) and
// checks that goroutines and open fds return to their baseline.
func TestNoLeaks(t *testing.T) {
	// Not parallel: it counts the whole process's goroutines and fds.
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	addr, _ := startSluice(t, "--handshake-timeout", "2s")
	target := echo.Addr().(*net.TCPAddr)
	refused := closedPort(t)
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	utarget := handshake.AddrFromAddrPort(uecho.LocalAddr().(*net.UDPAddr).AddrPort())
	baseG, baseSockets := runtime.NumGoroutine(), countSockets(t)

	kinds := []func(t *testing.T){
		func(t *testing.T) { // a whole session with data
			c := connectRaw(t, addr, target)
			mustWrite(t, c, []byte("ping"))
			expect(t, c, []byte("ping"))
			c.Close()
		},
		func(t *testing.T) { // dial refused
			c := dialSluice(t, addr)
			mustWrite(t, c, append([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1}, refused...))
			expect(t, c, []byte{5, 0})
			if rep, _ := readReply(t, c); rep != 5 {
				t.Errorf("REP = %#02x, want 0x05", rep)
			}
			c.Close()
		},
		func(t *testing.T) { // aborted mid-handshake, with a reset
			c := dialSluice(t, addr)
			mustWrite(t, c, []byte{5, 2, 0})
			c.SetLinger(0)
			c.Close()
		},
		func(t *testing.T) { // aborted mid-relay, with a reset
			c := connectRaw(t, addr, target)
			mustWrite(t, c, []byte("x"))
			c.SetLinger(0)
			c.Close()
		},
		func(t *testing.T) { // a UDP association with one datagram each way
			c, relay := associateUDP(t, addr)
			u := udpClient(t, "127.0.0.1", relay)
			roundTrip(t, u, utarget, []byte("datagram"), utarget.AddrPort())
			u.Close()
			c.Close()
		},
		func(t *testing.T) { // a BIND whose client leaves before any peer comes
			c, _ := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
			c.Close()
		},
		func(t *testing.T) { // garbage
			c := dialSluice(t, addr)
			mustWrite(t, c, []byte("GET / HTTP/1.1\r\n\r\n"))
			expectClosed(t, c)
			c.Close()
		},
	}
	const sessions = 1000
	for i := range sessions {
		kinds[i%len(kinds)](t)
	}
	if !waitFor(10*time.Second, func() bool { return runtime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d after %d sessions, baseline %d\n%s", runtime.NumGoroutine(), sessions, baseG, buf[:runtime.Stack(buf, true)])
	}
	// Pipes are pooled by the relay for reuse; count sockets only.
	if !waitFor(10*time.Second, func() bool { return countSockets(t) <= baseSockets }) {
		t.Fatalf("fds: %d sockets open after %d sessions, baseline %d", countSockets(t), sessions, baseSockets)
	}
}
