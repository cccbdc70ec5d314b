package tune

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdSock is a descriptor from DialFd as the read-back helpers take it
// (syscall.Conn), without package net, which would set TCP_NODELAY and
// keepalive again on adopting it.
type fdSock int

func (s fdSock) SyscallConn() (syscall.RawConn, error) { return s, nil }
func (s fdSock) Control(f func(fd uintptr)) error      { f(uintptr(s)); return nil }
func (s fdSock) Read(func(fd uintptr) bool) error      { return errors.ErrUnsupported }
func (s fdSock) Write(func(fd uintptr) bool) error     { return errors.ErrUnsupported }

// file takes over a descriptor from DialFd for reads and writes, closed at
// cleanup.
func file(t *testing.T, fd int) *os.File {
	f := os.NewFile(uintptr(fd), "dialled")
	t.Cleanup(func() { f.Close() })
	return f
}

// sockAddr is fd's local or remote address.
func sockAddr(t *testing.T, fd int, peer bool) netip.AddrPort {
	t.Helper()
	get := unix.Getsockname
	if peer {
		get = unix.Getpeername
	}
	sa, err := get(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	t.Fatalf("address %v", sa)
	return netip.AddrPort{}
}

// dialFd runs o.DialFd to addr within the test's safety bound.
func dialFd(o *Options, addr netip.AddrPort) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	return o.DialFd(ctx, addr)
}

func TestDialFdUpstreamOptions(t *testing.T) {
	t.Parallel()
	o, cases := allUpstreamOptions(t)
	s := o.Upstream
	l := listen(t, &Options{})[0]
	fd, err := dialFd(o, l.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatalf("DialFd: %v", err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("F_GETFL = %#x, %v; want O_NONBLOCK", flags, err)
	}
	if fdFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fdFlags&unix.FD_CLOEXEC == 0 {
		t.Errorf("F_GETFD = %#x, %v; want FD_CLOEXEC", fdFlags, err)
	}
	c := fdSock(fd)
	if got := getString(t, c, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "lo" {
		t.Errorf("SO_BINDTODEVICE = %q, want lo", got)
	}
	if got := sockAddr(t, fd, false).Addr(); got != o.SourceAddr {
		t.Errorf("source address %v, want %v", got, o.SourceAddr)
	}
	if got := getInt(t, c, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT); got != 1 {
		t.Errorf("IP_BIND_ADDRESS_NO_PORT = %d, want 1 (a source address must not take a port of its own)", got)
	}
	if got := getInt(t, c, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT); got != 1 {
		t.Errorf("TCP_FASTOPEN_CONNECT = %d, want 1", got)
	}
	// TCP_QUICKACK reads 1 on any new connection: no proof here.
	var rest []sockCase
	for _, tc := range cases {
		if tc.opt != unix.TCP_QUICKACK {
			rest = append(rest, tc)
		}
	}
	checkSockOpts(t, c, s, rest)
	echoByte(t, file(t, fd), l)
}

// echoByte sends a byte over c to l's next connection and back.
func echoByte(t *testing.T, c interface {
	io.ReadWriter
	SetDeadline(time.Time) error
}, l *net.TCPListener) {
	t.Helper()
	c.SetDeadline(deadline())
	if _, err := c.Write([]byte{7}); err != nil { // with fast open, the SYN leaves now
		t.Fatalf("write: %v", err)
	}
	a, err := l.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer a.Close()
	a.SetDeadline(deadline())
	b := make([]byte, 1)
	if _, err := io.ReadFull(a, b); err != nil || b[0] != 7 {
		t.Fatalf("upstream read %v, %v; want [7]", b, err)
	}
	if _, err := a.Write(b); err != nil {
		t.Fatalf("upstream write: %v", err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
}

// TestDialFdDefaults: with no option, the socket has TCP_NODELAY (as
// package net sets it), Go's keepalive defaults and plain TCP, over IPv4 and
// IPv6.
func TestDialFdDefaults(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Skipf("no %s listener here: %v", network, err)
		}
		defer ln.Close()
		l := ln.(*net.TCPListener)
		l.SetDeadline(deadline())
		o := &Options{}
		fd, err := dialFd(o, l.Addr().(*net.TCPAddr).AddrPort())
		if err != nil {
			t.Fatalf("DialFd %s: %v", l.Addr(), err)
		}
		c := fdSock(fd)
		for _, tc := range []sockCase{
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
			{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP},
		} {
			if got := getInt(t, c, tc.level, tc.opt); got != tc.want {
				t.Errorf("%s: %s = %d, want %d", l.Addr(), tc.name, got, tc.want)
			}
		}
		echoByte(t, file(t, fd), l)
	}
}

// TestDialFdErrors: the errors map as net.Dialer's do for the SOCKS reply
// codes: refused, timed out, cancelled, and a target of the wrong family
// for the source address.
func TestDialFdErrors(t *testing.T) {
	t.Parallel()
	// A port bound without listening refuses connects, and its socket
	// keeps it from another test and from being the source port of the
	// dial itself (a connect to a free loopback port can pick that port
	// and connect to itself).
	held, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	if err := unix.Bind(held, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	closed := sockAddr(t, held, false)
	if _, err := dialFd(&Options{}, closed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("closed port: %v; want ECONNREFUSED", err)
	}
	if _, err := dialFd(&Options{DialTimeout: time.Nanosecond}, closed); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("1 ns dial timeout: %v; want os.ErrDeadlineExceeded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Options{}).DialFd(ctx, closed); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v; want context.Canceled", err)
	}
	v4 := &Options{SourceAddr: netip.MustParseAddr("127.0.0.1")}
	if _, err := dialFd(v4, netip.MustParseAddrPort("[::1]:9")); !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Errorf("IPv6 target from an IPv4 source: %v; want EAFNOSUPPORT", err)
	}
}

// fullListener listens on loopback with a backlog of 0 and fills its
// accept queue with one connection, so that the kernel drops the next SYN:
// a connect to it stays pending. It returns the listener's descriptor,
// closed at cleanup, and its address.
func fullListener(t *testing.T) (int, netip.AddrPort) {
	t.Helper()
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr.String(), safety)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return lfd, addr
}

// TestDialFdPending: a connect that does not complete within the call
// waits through the poller, up to the dial timeout, and completes there
// when the target answers later.
func TestDialFdPending(t *testing.T) {
	t.Parallel()
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		_, addr := fullListener(t)
		start := time.Now()
		_, err := dialFd(&Options{DialTimeout: 200 * time.Millisecond}, addr)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("dial to a full accept queue: %v; want os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("timed out after %v; want the 200 ms dial timeout", d)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		_, addr := fullListener(t)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			waitSynSent(t, addr)
			cancel()
		}()
		if _, err := (&Options{}).DialFd(ctx, addr); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled pending dial: %v; want context.Canceled", err)
		}
	})
	t.Run("late", func(t *testing.T) {
		t.Parallel()
		lfd, addr := fullListener(t)
		go func() {
			// Once the SYN is out and dropped, make room: the kernel's
			// retransmission (after 1 s) gets in.
			waitSynSent(t, addr)
			if nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC); err == nil {
				unix.Close(nfd)
			}
		}()
		fd, err := dialFd(&Options{}, addr)
		if err != nil {
			t.Fatalf("pending dial: %v", err)
		}
		file(t, fd)
		if got := sockAddr(t, fd, true); got != addr {
			t.Errorf("connected to %v; want %v", got, addr)
		}
	})
}

// TestDialFdYield: yield runs once, before the wait, for a connect still in
// progress, and never for one that completed within the system call.
func TestDialFdYield(t *testing.T) {
	t.Parallel()
	t.Run("established", func(t *testing.T) {
		t.Parallel()
		l := listen(t, &Options{})[0]
		yields := 0
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		fd, err := (&Options{}).DialFdYield(ctx, l.Addr().(*net.TCPAddr).AddrPort(), func(func()) { yields++ })
		if err != nil {
			t.Fatalf("DialFdYield to a loopback listener: %v", err)
		}
		file(t, fd)
		if yields != 0 {
			t.Errorf("yield ran %d times for a connect that completed at once; want 0", yields)
		}
	})
	t.Run("pending", func(t *testing.T) {
		t.Parallel()
		_, addr := fullListener(t)
		yields := 0
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		// That the yield comes before the wait, not after it, is
		// TestDialFdAbort's to show: an abort handed to it ends a dial
		// whose timeout is a minute away.
		const timeout = 200 * time.Millisecond
		start := time.Now()
		_, err := (&Options{DialTimeout: timeout}).DialFdYield(ctx, addr, func(func()) { yields++ })
		waited := time.Since(start)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("dial to a full accept queue: %v; want os.ErrDeadlineExceeded", err)
		}
		if yields != 1 {
			t.Fatalf("yield ran %d times for a pending connect; want 1", yields)
		}
		if waited < timeout {
			t.Errorf("dial returned after %v, before its %v timeout", waited, timeout)
		}
	})
}

// TestDialFdAbort: the abort handed to yield ends a pending dial with
// ErrAborted, long before its timeout, from another goroutine; called after
// the dial returned, it does nothing. A yield that came only after the wait
// would leave the dial to end with ctx, ten seconds on.
func TestDialFdAbort(t *testing.T) {
	t.Parallel()
	_, addr := fullListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	var abort func()
	start := time.Now()
	_, err := (&Options{DialTimeout: time.Minute}).DialFdYield(ctx, addr, func(a func()) {
		abort = a
		go func() {
			waitSynSent(t, addr)
			a()
		}()
	})
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("aborted pending dial: %v after %v; want ErrAborted", err, time.Since(start))
	}
	abort() // after the dial: nothing to end, no panic
}

// waitSynSent returns once a socket of this machine is in SYN_SENT towards
// addr, as /proc/net/tcp shows, or after the safety bound.
func waitSynSent(t *testing.T, addr netip.AddrPort) {
	want := strings.ToUpper(strconv.FormatUint(uint64(addr.Port()), 16))
	for end := time.Now().Add(safety); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// rem_address is HEXIP:HEXPORT; state 02 is SYN_SENT.
			if len(f) > 3 && f[3] == "02" && strings.HasSuffix(f[2], ":"+leftPad(want)) {
				return
			}
		}
	}
}

func leftPad(hex string) string {
	return strings.Repeat("0", 4-len(hex)) + hex
}

// TestDialFdLateKeepAlive: DialFdLate sets every upstream option but
// keepalive, and ArmKeepAlive then sets keepalive as DialFd would have.
func TestDialFdLateKeepAlive(t *testing.T) {
	t.Parallel()
	o, cases := allUpstreamOptions(t)
	if !o.UpstreamKeepAlive() {
		t.Fatal("UpstreamKeepAlive = false with keepalive configured")
	}
	l := listen(t, &Options{})[0]
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	fd, err := o.DialFdLate(ctx, l.Addr().(*net.TCPAddr).AddrPort(), nil)
	if err != nil {
		t.Fatalf("DialFdLate: %v", err)
	}
	c := fdSock(fd)
	var rest []sockCase
	for _, tc := range cases {
		switch tc.opt {
		case unix.TCP_QUICKACK: // reads 1 on any new connection
		case unix.TCP_KEEPIDLE, unix.TCP_KEEPINTVL, unix.TCP_KEEPCNT: // read after ArmKeepAlive
		case unix.SO_KEEPALIVE:
			if got := getInt(t, c, tc.level, tc.opt); got != 0 {
				t.Errorf("SO_KEEPALIVE = %d before ArmKeepAlive, want 0", got)
			}
		default:
			rest = append(rest, tc)
		}
	}
	checkSockOpts(t, c, o.Upstream, rest)
	if err := o.ArmKeepAlive(fd); err != nil {
		t.Fatalf("ArmKeepAlive: %v", err)
	}
	for _, tc := range cases {
		switch tc.opt {
		case unix.SO_KEEPALIVE, unix.TCP_KEEPIDLE, unix.TCP_KEEPINTVL, unix.TCP_KEEPCNT:
			if got := getInt(t, c, tc.level, tc.opt); got != tc.want {
				t.Errorf("%s = %d after ArmKeepAlive, want %d", tc.name, got, tc.want)
			}
		}
	}
	echoByte(t, file(t, fd), l)

	// With keepalive off there is nothing to arm.
	off := &Options{Upstream: SockOpts{KeepAliveIdle: -1}}
	if off.UpstreamKeepAlive() {
		t.Error("UpstreamKeepAlive = true with keepalive off")
	}
	fd2, err := off.DialFdLate(ctx, l.Addr().(*net.TCPAddr).AddrPort(), nil)
	if err != nil {
		t.Fatalf("DialFdLate: %v", err)
	}
	file(t, fd2) // closed at cleanup
	if err := off.ArmKeepAlive(fd2); err != nil {
		t.Fatalf("ArmKeepAlive with keepalive off: %v", err)
	}
	if got := getInt(t, fdSock(fd2), unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
		t.Errorf("SO_KEEPALIVE = %d with keepalive off, want 0", got)
	}
}
