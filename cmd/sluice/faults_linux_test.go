package main

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fullListener returns the address of a loopback TCP listener with a
// backlog of 0 that never accepts, after filling its accept queue: Linux
// drops SYNs to a listener whose queue is full (tcp_abort_on_overflow=0),
// so a connect to it hangs until the caller gives up.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_abort_on_overflow"); err == nil && len(b) > 0 && b[0] != '0' {
		t.Skip("net.ipv4.tcp_abort_on_overflow is on: a full accept queue resets instead of dropping SYNs")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue: connects succeed until it is full, then one hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 300*time.Millisecond)
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				return addr
			}
			t.Fatalf("filling the accept queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%v accepted 8 connections with a backlog of 0", addr)
	return addr
}

// TestTargetNeverAccepts sends CONNECT to a target whose SYNs are dropped:
// with --dial-timeout 500ms the client gets 0x06 TTL expired, then a close,
// and nothing is left behind. Not parallel: it counts the whole process.
func TestTargetNeverAccepts(t *testing.T) {
	addr, _ := startSluice(t, "--dial-timeout", "500ms")
	target := fullListener(t)
	noLeak(t, func(t *testing.T) {
		c := dialSluice(t, addr)
		start := time.Now()
		mustWrite(t, c, connectReq(target))
		expect(t, c, []byte{5, 0})
		if rep, _ := readReply(t, c); rep != 0x06 {
			t.Fatalf("REP = %#02x after %v, want 0x06 TTL expired", rep, time.Since(start))
		}
		if d := time.Since(start); d < 450*time.Millisecond {
			t.Errorf("0x06 after %v, before the 500ms dial timeout", d)
		}
		expectEnd(t, c, 10*time.Second)
		c.Close()
	})
}
