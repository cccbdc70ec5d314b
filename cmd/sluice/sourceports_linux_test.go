package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// systemPortRange skips t on a kernel without IP_LOCAL_PORT_RANGE and returns
// net.ipv4.ip_local_port_range.
func systemPortRange(t *testing.T) (lo, hi int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, 0); errors.Is(err, unix.ENOPROTOOPT) {
		t.Skip("kernel without IP_LOCAL_PORT_RANGE (Linux 6.3 and later have it)")
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if hi-lo < 1000 {
		t.Skipf("net.ipv4.ip_local_port_range %d-%d: this test needs 1,000 ports", lo, hi)
	}
	return lo, hi
}

// TestSourcePortsFlag: with --source-ports LOW-HIGH every CONNECT reaches
// its target from a port in that range, on the bare-socket dial and through
// package net alike, and with --source-addr too (bound without a port, so
// that connect still picks it).
func TestSourcePortsFlag(t *testing.T) {
	t.Parallel()
	lo, _ := systemPortRange(t)
	low, high := lo+300, lo+363
	for _, extra := range [][]string{nil, {"--net-sockets"}, {"--source-addr", "127.0.0.2"}} {
		t.Run(strings.Join(append([]string{"default"}, extra...), " "), func(t *testing.T) {
			t.Parallel()
			target, peers := peerTarget(t)
			addr, _ := startSluice(t, append([]string{"--source-ports", fmt.Sprintf("%d-%d", low, high)}, extra...)...)
			for range 6 {
				c := connectRaw(t, addr, target)
				mustWrite(t, c, []byte("x"))
				expect(t, c, []byte("x"))
				peer := <-peers
				if peer.Port < low || peer.Port > high {
					t.Errorf("upstream connect from port %d, want %d-%d", peer.Port, low, high)
				}
				if len(extra) == 2 && extra[0] == "--source-addr" && peer.IP.String() != extra[1] {
					t.Errorf("upstream connect from %v, want --source-addr %s", peer.IP, extra[1])
				}
				c.Close()
			}
		})
	}
}

// peerTarget is a one-byte echo target on loopback that sends the remote
// address of each connection it accepts (the relay's upstream socket) on the
// channel.
func peerTarget(t *testing.T) (*net.TCPAddr, <-chan *net.TCPAddr) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	peers := make(chan *net.TCPAddr, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr)
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err == nil {
				c.Write(b)
			}
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr), peers
}
