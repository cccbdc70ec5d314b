package tune

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// safety bounds every blocking call in these tests; none waits on it.
const safety = 10 * time.Second

func deadline() time.Time { return time.Now().Add(safety) }

func getInt(t *testing.T, sc syscall.Conn, level, name int) int {
	t.Helper()
	var v int
	err := control(t, sc, func(fd int) (err error) { v, err = unix.GetsockoptInt(fd, level, name); return err })
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, name, err)
	}
	return v
}

func getString(t *testing.T, sc syscall.Conn, level, name int) string {
	t.Helper()
	var v string
	err := control(t, sc, func(fd int) (err error) { v, err = unix.GetsockoptString(fd, level, name); return err })
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, name, err)
	}
	return v
}

func setIntOpt(t *testing.T, sc syscall.Conn, level, name, v int) {
	t.Helper()
	if err := control(t, sc, func(fd int) error { return unix.SetsockoptInt(fd, level, name, v) }); err != nil {
		t.Fatalf("setsockopt(%d, %d, %d): %v", level, name, v, err)
	}
}

func control(t *testing.T, sc syscall.Conn, f func(fd int) error) error {
	t.Helper()
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rawControl(rc, f)
}

// listen opens o's listeners on 127.0.0.1 and closes them at cleanup.
func listen(t *testing.T, o *Options) []*net.TCPListener {
	t.Helper()
	ls, err := o.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { closeListeners(ls) })
	for _, l := range ls {
		l.SetDeadline(deadline())
	}
	return ls
}

// connect dials l with a plain dialer, sends one byte (TCP_DEFER_ACCEPT holds
// back connections until data arrives) and accepts. Both ends close at cleanup.
func connect(t *testing.T, l *net.TCPListener) (dialled, accepted *net.TCPConn) {
	t.Helper()
	d := net.Dialer{Timeout: safety}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatalf("write: %v", err)
	}
	a, err := l.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return c.(*net.TCPConn), a
}

// congestion picks an available algorithm other than the system default,
// preferring reno, so that reading it back proves it was set.
func congestion(t *testing.T) string {
	t.Helper()
	avail, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Skipf("no congestion control list: %v", err)
	}
	def, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	names := strings.Fields(string(avail))
	for _, cc := range append([]string{"reno", "cubic"}, names...) {
		if slices.Contains(names, cc) && cc != strings.TrimSpace(string(def)) {
			return cc
		}
	}
	t.Skipf("only the default congestion control %q is available", def)
	return ""
}

// sockCase is one option of SockOpts, with how to read it back.
type sockCase struct {
	name  string
	level int
	opt   int
	want  int
}

// allSockOpts sets every SockOpts field to a value differing from the
// kernel's and Go's defaults, and lists the expected read-backs.
func allSockOpts(t *testing.T) (SockOpts, []sockCase) {
	const buf = 96 << 10 // under net.core.rmem_max and wmem_max's defaults
	s := SockOpts{
		RecvBufferBytes:   buf,
		SendBufferBytes:   buf + 4096,
		Nagle:             true,
		KeepAliveIdle:     33 * time.Second,
		KeepAliveInterval: 1500 * time.Millisecond, // rounds up to 2 s
		KeepAliveCount:    4,
		UserTimeout:       12345 * time.Millisecond,
		Congestion:        congestion(t),
		NotSentLowatBytes: 16 << 10,
		QuickAck:          true,
		Mark:              0x5a1ce,
	}
	return s, []sockCase{
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, 2 * buf}, // the kernel doubles it
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, 2 * (buf + 4096)},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 33},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 2},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 12345},
		{"TCP_NOTSENT_LOWAT", unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 16 << 10},
		{"TCP_QUICKACK", unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1},
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP}, // MPTCP off
	}
}

// checkSockOpts reads back every case, the congestion algorithm and, unless
// the mark is 0, SO_MARK.
func checkSockOpts(t *testing.T, c syscall.Conn, s SockOpts, cases []sockCase) {
	t.Helper()
	for _, tc := range cases {
		if got := getInt(t, c, tc.level, tc.opt); got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := getString(t, c, unix.IPPROTO_TCP, unix.TCP_CONGESTION); got != s.Congestion {
		t.Errorf("TCP_CONGESTION = %q, want %q", got, s.Congestion)
	}
	if s.Mark != 0 {
		if got := getInt(t, c, unix.SOL_SOCKET, unix.SO_MARK); uint32(got) != s.Mark {
			t.Errorf("SO_MARK = %#x, want %#x", got, s.Mark)
		}
	}
}

// enterPingpong leaves quickack mode, so that reading TCP_QUICKACK back as 1
// shows it was set again.
func enterPingpong(t *testing.T, c *net.TCPConn) {
	t.Helper()
	setIntOpt(t, c, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
	if got := getInt(t, c, unix.IPPROTO_TCP, unix.TCP_QUICKACK); got != 0 {
		t.Fatalf("TCP_QUICKACK = %d after clearing it, want 0", got)
	}
}

// TestUserTimeout: TCP_USER_TIMEOUT counts milliseconds; a timeout that is
// not a whole number of them is rounded up, as keepalive's seconds are,
// never down to 0 (which is off), on listeners and on dialled sockets; one
// beyond what the kernel's int holds is refused by Probe on every
// architecture, not wrapped to another value where int has 32 bits.
func TestUserTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{500 * time.Microsecond, 1},
		{1500 * time.Microsecond, 2},
		{12 * time.Millisecond, 12},
	} {
		o := &Options{Client: SockOpts{UserTimeout: tc.d}, Upstream: SockOpts{UserTimeout: tc.d}}
		if p, errs := o.Probe(); len(errs) != 0 || p != *o {
			t.Errorf("Probe with %v = %+v, %v; want it unchanged and silent", tc.d, p, errs)
		}
		l := listen(t, o)[0]
		if got := getInt(t, l, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); got != tc.want {
			t.Errorf("listener TCP_USER_TIMEOUT with %v = %d, want %d", tc.d, got, tc.want)
		}
		fd, err := dialFd(o, l.Addr().(*net.TCPAddr).AddrPort())
		if err != nil {
			t.Fatalf("DialFd: %v", err)
		}
		file(t, fd)
		if got := getInt(t, fdSock(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); got != tc.want {
			t.Errorf("DialFd TCP_USER_TIMEOUT with %v = %d, want %d", tc.d, got, tc.want)
		}
	}
	// 1200 h is 4,320,000,000 ms: past a C int, and 25,032,704 ms (7 h)
	// once wrapped to 32 bits.
	in := Options{Client: SockOpts{UserTimeout: 1200 * time.Hour}}
	got, errs := in.Probe()
	if flags := errorFlags(t, errs); !slices.Equal(flags, []string{"--client-user-timeout"}) || !errors.Is(errs[0], unix.EINVAL) || got.Client.UserTimeout != 0 {
		t.Errorf("Probe with --user-timeout 1200h = %+v, %v; want it off, with EINVAL", got.Client, errs)
	}
}
