package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"sluice/handshake"
	"sluice/tune"
	"sluice/tune/rawsys"
)

// peerOf is a connected socket's peer address.
func peerOf(t *testing.T, fd int) netip.AddrPort {
	t.Helper()
	var sa rawsys.Sockaddr
	n := uint32(rawsys.SizeofSockaddr)
	if _, _, e := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(sa.Pointer()), uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	return sa.AddrPort()
}

// TestConnectNameBare: with bare sockets (the default) a CONNECT to a name
// is dialled as a bare socket, as one to an address is, and relays.
func TestConnectNameBare(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := uint16(echo.Addr().(*net.TCPAddr).Port)
	var buf syncBuffer
	addr, inst := startSluiceResolver(t, fixedResolver(t, netip.MustParseAddr("127.0.0.1")), &buf)
	const name = "target.test"
	c := dialSluice(t, addr)
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(name))}, name...)
	mustWrite(t, c, append(req, byte(port>>8), byte(port), 'x'))
	var rep [2 + 10 + 1]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil || rep[1] != 0 || rep[3] != 0 || rep[12] != 'x' {
		t.Fatalf("replies and echo %x, %v", rep, err)
	}
	up, fd, err := inst.srv.connect(context.Background(), inst.srv.live.Load(), &client{fd: -1},
		handshake.Addr{Type: handshake.AddrDomain, Name: []byte(name), Port: port})
	if err != nil || up != nil || fd < 0 {
		t.Fatalf("connect to a name: %v, %v, %d; want a bare socket", err, up, fd)
	}
	defer syscall.Close(fd)
	if got, want := peerOf(t, fd), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port); got != want {
		t.Errorf("dialled %v; want %v", got, want)
	}
}

// stalledListener listens on ip:port with a backlog of 0 and fills its
// accept queue, so that a further connect's SYN is dropped and the connect
// stays in progress.
func stalledListener(t *testing.T, ip netip.Addr, port uint16) bool {
	t.Helper()
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(port), Addr: ip.As16()})
	if ip.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, sa); err != nil {
		return false // the port is taken on this family
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, port).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return true
}

// TestDialNameHappyEyeballs dials a name with an A and an AAAA record as
// net.Dialer would: the first family's address when it answers; the other
// family's at once when the first is refused; and the fallback delay after
// the start when the first family's connect hangs (its SYN dropped by a
// full accept queue), the hung attempt then canceled. Bare sockets
// (dialNameFd) and package net's (--net-sockets with rules that look at
// addresses: dialResolved) alike. "At once" is told apart from the timer
// without timing the machine: that case runs on a server whose fallback
// delay is a minute.
func TestDialNameHappyEyeballs(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testHappyEyeballs(t, args)
		})
	}
}

// dialNamePeer dials name:port as a CONNECT to a name whose addresses the
// rules check does (dialNameFd with bare sockets, dialResolved without),
// and returns the peer address of what it connected.
func dialNamePeer(t *testing.T, inst *instance, name string, port uint16) (netip.AddrPort, error) {
	t.Helper()
	a := handshake.Addr{Type: handshake.AddrDomain, Name: []byte(name), Port: port}
	if inst.srv.bareSockets {
		fd, err := inst.srv.dialNameFd(context.Background(), nil, a)
		if err != nil {
			return netip.AddrPort{}, err
		}
		defer syscall.Close(fd)
		return peerOf(t, fd), nil
	}
	c, err := inst.srv.dialResolved(context.Background(), nil, a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	return c.RemoteAddr().(*net.TCPAddr).AddrPort(), nil
}

func testHappyEyeballs(t *testing.T, args []string) {
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	r := dualResolver(t, v4, v6)
	var buf, bufSlow syncBuffer
	_, inst := startSluiceResolver(t, r, &buf, args...)
	const slowFallback = time.Minute
	_, slow := startSluiceConfig(t, func(cfg *config) { cfg.resolver, cfg.fallbackDelay = r, slowFallback }, &bufSlow, args...)
	if inst.srv.fallbackDelay != defaultFallbackDelay || slow.srv.fallbackDelay != slowFallback {
		t.Fatalf("fallback delays %v and %v; want %v and %v", inst.srv.fallbackDelay, slow.srv.fallbackDelay, defaultFallbackDelay, slowFallback)
	}
	const name = "dual.test"
	ctx := context.Background()
	ips, err := r.LookupNetIP(ctx, "ip", name)
	if err != nil || len(ips) != 2 {
		t.Fatalf("lookup: %v, %v; want an A and an AAAA record", ips, err)
	}
	first, other := ips[0].Unmap(), ips[1].Unmap()
	t.Logf("resolved %v", ips)
	network := func(ip netip.Addr) string {
		if ip.Is4() {
			return "tcp4"
		}
		return "tcp6"
	}
	dial := func(inst *instance, port uint16) (netip.AddrPort, time.Duration) {
		t.Helper()
		start := time.Now()
		peer, err := dialNamePeer(t, inst, name, port)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return peer, time.Since(start)
	}

	l := echoServer(t, network(first), netip.AddrPortFrom(first, 0).String())
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	if got, _ := dial(inst, port); got.Addr().Unmap() != first {
		t.Errorf("both answer: dialled %v; want the first family, %v", got, first)
	}

	l = echoServer(t, network(other), netip.AddrPortFrom(other, 0).String())
	port = uint16(l.Addr().(*net.TCPAddr).Port)
	if got, took := dial(slow, port); got.Addr().Unmap() != other || took >= slowFallback/2 {
		t.Errorf("first family refused: dialled %v after %v; want %v at once, not after the %v fallback delay", got, took, other, slowFallback)
	}

	// With --source-addr, only the source's family: IPv4 refused is the
	// answer, though ::1 (listening) comes first.
	var buf4 syncBuffer
	_, inst4 := startSluiceResolver(t, r, &buf4, append([]string{"--source-addr", "127.0.0.1"}, args...)...)
	// The port must be free on 127.0.0.1 too: a parallel test's listener
	// there once answered in its place.
	for tries := 0; ; tries++ {
		l = echoServer(t, "tcp6", netip.AddrPortFrom(v6, 0).String())
		port = uint16(l.Addr().(*net.TCPAddr).Port)
		if l4, err := net.Listen("tcp4", netip.AddrPortFrom(v4, port).String()); err == nil {
			l4.Close()
			break
		}
		if tries == 10 {
			t.Fatal("no port free on both families")
		}
	}
	if _, err := dialNamePeer(t, inst4, name, port); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("with --source-addr 127.0.0.1 and only ::1 listening: %v; want ECONNREFUSED", err)
	}

	for tries := 0; ; tries++ {
		l = echoServer(t, network(other), netip.AddrPortFrom(other, 0).String())
		port = uint16(l.Addr().(*net.TCPAddr).Port)
		if stalledListener(t, first, port) {
			break
		}
		if tries == 10 {
			t.Fatal("no port free on both families")
		}
	}
	if got, took := dial(inst, port); got.Addr().Unmap() != other || took < defaultFallbackDelay {
		t.Errorf("first family hangs: dialled %v after %v; want %v after %v", got, took, other, defaultFallbackDelay)
	}
}

// TestDialEndedPrecedence: a dial that ends on a rule's denial or on a lack
// of descriptors keeps that error though its client left at the same
// instant (the waiter saw it reset and aborted the dial), so that the
// denial is counted and replied and fdPressure trims; any other failure of
// a dial whose client left is errClientGone, with no reply (errReplied).
// With the client still there, every outcome passes through unchanged.
func TestDialEndedPrecedence(t *testing.T) {
	t.Parallel()
	denied := errDenied{netip.MustParseAddr("64:ff9b::a00:1")}
	emfile := os.NewSyscallError("fcntl", syscall.EMFILE)
	enfile := os.NewSyscallError("socket", syscall.ENFILE)
	for _, tc := range []struct {
		name string
		err  error
		kept bool // the error wins over the client's leaving
	}{
		{"denied", denied, true},
		{"emfile", emfile, true},
		{"enfile", enfile, true},
		{"canceled", context.Canceled, false},
		{"aborted", tune.ErrAborted, false},
		{"refused", os.NewSyscallError("connect", syscall.ECONNREFUSED), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, peer, w := waitingClient(t)
			w.watchAfter = -1 // watched at once
			aborted := make(chan struct{})
			c.dialing(func() { close(aborted) })
			peer.SetLinger(0)
			peer.Close() // <- RST: the client left
			select {
			case <-aborted: // c.left is set before the abort, under w.mu
			case <-time.After(10 * time.Second):
				t.Fatal("the waiter never aborted the dial of a client that reset")
			}
			got := dialEnded(c, tc.err)
			if tc.kept && got != tc.err {
				t.Errorf("client left, dial failed with %v: %v; want the dial's error", tc.err, got)
			}
			if !tc.kept && (!errors.Is(got, errClientGone) || !errors.As(got, new(errReplied))) {
				t.Errorf("client left, dial failed with %v: %v; want errClientGone, replied", tc.err, got)
			}

			c2, _, w2 := waitingClient(t)
			w2.watchAfter = -1
			c2.dialing(func() { t.Error("dial of a client still there aborted") })
			if got := dialEnded(c2, tc.err); got != tc.err {
				t.Errorf("client there, dial failed with %v: %v; want it unchanged", tc.err, got)
			}
		})
	}
}
