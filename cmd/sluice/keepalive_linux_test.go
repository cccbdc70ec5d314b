package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/handshake"
)

// TestUpstreamKeepAliveLate: a CONNECT's upstream socket gets no keepalive
// while the session is young, and the configured one once it has lived a
// second (relay.Options.Mature). The relay runs in this process, so the
// test finds the upstream socket among its own descriptors and reads the
// options back.
func TestUpstreamKeepAliveLate(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--keepalive-idle", "7s", "--keepalive-interval", "3s", "--keepalive-count", "4")
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	target := l.Addr().(*net.TCPAddr).AddrPort()
	keepalive := func(fd int) int {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		if err != nil {
			t.Fatalf("SO_KEEPALIVE: %v", err)
		}
		return v
	}
	// The session starts after begun: read within a second of begun, the
	// socket is young for sure. A busy machine may take longer to get
	// there; that try tells nothing, and the next one is made.
	var (
		c     net.Conn
		up    *net.TCPConn
		fd    int
		ka    int
		begun time.Time
	)
	for try := 1; ; try++ {
		begun = time.Now()
		var rep byte
		c, rep = request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(target))
		if rep != 0 {
			t.Fatalf("CONNECT: reply %d", rep)
		}
		if up, err = l.AcceptTCP(); err != nil {
			t.Fatal(err)
		}
		// The relay's upstream socket: local = up's peer, remote = target.
		if fd, err = findSocket(up.RemoteAddr().(*net.TCPAddr).AddrPort(), target); err != nil {
			t.Fatal(err)
		}
		ka = keepalive(fd)
		if young := time.Since(begun); young < time.Second {
			break
		} else if try == 5 {
			t.Fatalf("read the young socket %v after the request, 5 times: too late to tell", young)
		}
		c.Close()
		up.Close()
	}
	defer c.Close()
	defer up.Close()
	if ka != 0 {
		t.Errorf("young upstream socket: SO_KEEPALIVE %d, want 0", ka)
	}
	if !waitFor(10*time.Second, func() bool { return keepalive(fd) == 1 }) {
		t.Fatal("the upstream socket never got SO_KEEPALIVE")
	}
	// begun precedes the session's start, so a second of the session's
	// life is at least a second past begun (less a coarse clock's 100 ms).
	if armed := time.Since(begun); armed < 900*time.Millisecond {
		t.Errorf("keepalive armed %v after the request; want after a second", armed)
	}
	// SO_KEEPALIVE is the first of the four options set: wait for the
	// other three too.
	opts := []struct {
		name      string
		opt, want int
	}{{"TCP_KEEPIDLE", unix.TCP_KEEPIDLE, 7}, {"TCP_KEEPINTVL", unix.TCP_KEEPINTVL, 3}, {"TCP_KEEPCNT", unix.TCP_KEEPCNT, 4}}
	set := func() bool {
		for _, o := range opts {
			if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, o.opt); err != nil || v != o.want {
				return false
			}
		}
		return true
	}
	waitFor(10*time.Second, set)
	for _, o := range opts {
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, o.opt); err != nil || v != o.want {
			t.Errorf("%s = %d, %v; want %d", o.name, v, err, o.want)
		}
	}
	// The session still relays.
	mustWrite(t, c, []byte("x"))
	up.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if _, err := up.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("upstream read %q, %v", b, err)
	}
}

// findSocket returns this process's descriptor of the TCP socket from local
// to remote.
func findSocket(local, remote netip.AddrPort) (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1, err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		la, err1 := unix.Getsockname(fd)
		ra, err2 := unix.Getpeername(fd)
		if err1 != nil || err2 != nil {
			continue
		}
		if inet4(la) == local && inet4(ra) == remote {
			return fd, nil
		}
	}
	return -1, fmt.Errorf("no socket %v -> %v in this process", local, remote)
}

// inet4 is an IPv4 socket address as a netip.AddrPort; zero for others.
func inet4(sa unix.Sockaddr) netip.AddrPort {
	if a, ok := sa.(*unix.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// TestClientKeepAliveWins: --client-keepalive=true wins over
// --keepalive=false whatever their order, as every --client-X wins over
// --X: the accepted client socket has SO_KEEPALIVE. It used to keep the
// both-sides value off, since setting keepalive to true changed nothing.
func TestClientKeepAliveWins(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"--keepalive=false"}, 0}, // the test sees the option at all
		{[]string{"--keepalive=false", "--client-keepalive=true"}, 1},
		{[]string{"--client-keepalive", "--keepalive=false"}, 1},
		{[]string{"--keepalive=false", "--upstream-keepalive=true"}, 0},
	}
	for _, tc := range cases {
		addr, _ := startSluice(t, tc.args...)
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 0})
		expect(t, c, []byte{5, 0}) // accepted: the session reads its request
		unmap := func(a net.Addr) netip.AddrPort {
			ap := a.(*net.TCPAddr).AddrPort()
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		fd, err := findSocket(unmap(c.RemoteAddr()), unmap(c.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		if err != nil || v != tc.want {
			t.Errorf("sluice %q: client socket SO_KEEPALIVE %d, %v; want %d", tc.args, v, err, tc.want)
		}
		c.Close()
	}
}
