package bench

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// startAssocProxy serves UDP ASSOCIATE for one client on loopback: it
// answers the greeting and the request with bnd(port) as the reply's ATYP,
// BND.ADDR and BND.PORT, where port is its relay socket's, and echoes every
// datagram on that socket back to its sender unchanged (the RFC 1928 header
// included), holding the control connection until the client closes it.
func startAssocProxy(t *testing.T, bnd func(port uint16) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	t.Cleanup(func() { ln.Close(); pc.Close(); <-done; <-done })
	go assocEcho(pc, done)
	go assocControl(t, ln, uint16(pc.LocalAddr().(*net.UDPAddr).Port), bnd, done)
	return ln.Addr().String()
}

// assocEcho echoes datagrams on pc until it is closed.
func assocEcho(pc net.PacketConn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// assocControl answers one client's greeting and UDP ASSOCIATE request, then
// waits for its close.
func assocControl(t *testing.T, ln net.Listener, port uint16, bnd func(uint16) []byte, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	// -> 05 01 00   <- 05 00
	// -> 05 03 00 01 0.0.0.0 0   <- 05 00 00 bnd
	b := make([]byte, 3+10)
	if _, err := io.ReadFull(c, b); err != nil || b[3+1] != cmdUDPAssociate {
		t.Errorf("proxy: request %x, %v", b, err)
		return
	}
	reply := append([]byte{5, 0, 5, 0, 0}, bnd(port)...)
	if _, err := c.Write(reply); err != nil {
		t.Errorf("proxy: reply: %v", err)
		return
	}
	io.Copy(io.Discard, c)
}

// TestUDPBoundName: a UDP ASSOCIATE reply whose BND.ADDR is a domain name
// (ATYP 3) still names the relay socket's port in BND.PORT; the client sends
// its datagrams there, at the address its control connection reached (as
// for an unspecified BND.ADDR). The build before dropped BND.PORT with the
// name and sent every datagram to port 0: no echo, an error per run.
func TestUDPBoundName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bnd  func(port uint16) []byte
	}{
		{"ipv4 unspecified", func(p uint16) []byte { return binary.BigEndian.AppendUint16([]byte{atypIPv4, 0, 0, 0, 0}, p) }},
		{"ipv4", func(p uint16) []byte { return binary.BigEndian.AppendUint16([]byte{atypIPv4, 127, 0, 0, 1}, p) }},
		{"domain", func(p uint16) []byte {
			return binary.BigEndian.AppendUint16(append([]byte{atypDomain, 9}, "localhost"...), p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxy := startAssocProxy(t, tc.bnd)
			res, err := UDP(context.Background(), UDPOptions{
				Client: Client{Proxy: Proxy{Addr: proxy}, Duration: 100 * time.Millisecond},
				Target: "127.0.0.1:9", SizeBytes: 64, Window: 4,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors.Total() != 0 || res.Received == 0 {
				t.Fatalf("sent %d, received %d, errors %+v; want echoes and no error", res.Sent, res.Received, res.Errors)
			}
		})
	}
}
