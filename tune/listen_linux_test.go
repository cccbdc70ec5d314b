package tune

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

func TestListenClientOptions(t *testing.T) {
	t.Parallel()
	netnstest.MarkPermitted(t)
	s, cases := allSockOpts(t)
	o := &Options{Client: s, FastOpenQueue: 16, DeferAccept: 3 * time.Second, Backlog: 17}
	l := listen(t, o)[0]

	listenerCases := []sockCase{
		{"TCP_FASTOPEN", unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16},
		{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 3},
		{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP},
	}
	for _, tc := range listenerCases {
		if got := getInt(t, l, tc.level, tc.opt); got != tc.want {
			t.Errorf("listener %s = %d, want %d", tc.name, got, tc.want)
		}
	}
	var info *unix.TCPInfo
	err := control(t, l, func(fd int) (err error) {
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	})
	if err != nil || info.Sacked != 17 { // a listener's tcpi_sacked is its backlog
		t.Errorf("listener backlog: %v, err %v; want 17", info, err)
	}

	_, a := connect(t, l)
	if got := getInt(t, a, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 1 {
		t.Errorf("TCP_NODELAY before ApplyClient = %d, want 1 (set by package net)", got)
	}
	enterPingpong(t, a)
	if err := o.ApplyClient(a); err != nil {
		t.Fatalf("ApplyClient: %v", err)
	}
	// ApplyClient sets only TCP_NODELAY and TCP_QUICKACK: the rest was inherited.
	checkSockOpts(t, a, s, cases)
}

func TestListenDefaults(t *testing.T) {
	t.Parallel()
	l := listen(t, &Options{})[0]
	// Package net would make this an MPTCP socket where the kernel allows it.
	if got := getInt(t, l, unix.SOL_SOCKET, unix.SO_PROTOCOL); got != unix.IPPROTO_TCP {
		t.Errorf("listener SO_PROTOCOL = %d, want IPPROTO_TCP", got)
	}
	_, a := connect(t, l)
	for _, c := range []struct {
		name  string
		level int
		opt   int
		want  int
	}{
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1}, // as package net does
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 0},
	} {
		if got := getInt(t, a, c.level, c.opt); got != c.want {
			t.Errorf("accepted %s = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestListenSmartAccept reads TCP_QUICKACK back from the listener and from
// a socket it accepted before any data arrived (so no delayed-ACK timer can
// have ended the mode yet): 0 means delayed ACKs (pingpong mode), which the
// accepted socket inherits with SmartAccept; 1 is the kernel's default, and
// what --quickack (Client.QuickAck) keeps.
func TestListenSmartAccept(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		addr string
		o    Options
		want int
	}{
		{"default", "127.0.0.1:0", Options{}, 1},
		{"smart accept", "127.0.0.1:0", Options{SmartAccept: true}, 0},
		{"smart accept with quickack", "127.0.0.1:0", Options{SmartAccept: true, Client: SockOpts{QuickAck: true}}, 1},
		{"smart accept IPv6", "[::1]:0", Options{SmartAccept: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls, err := tc.o.Listen(context.Background(), tc.addr)
			if err != nil && tc.addr == "[::1]:0" {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			l := ls[0]
			defer l.Close()
			l.SetDeadline(deadline())
			if got := getInt(t, l, unix.IPPROTO_TCP, unix.TCP_QUICKACK); got != tc.want {
				t.Errorf("listener TCP_QUICKACK = %d, want %d", got, tc.want)
			}
			c, err := net.DialTimeout("tcp", l.Addr().String(), safety)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			a, err := l.AcceptTCP()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			defer a.Close()
			if got := getInt(t, a, unix.IPPROTO_TCP, unix.TCP_QUICKACK); got != tc.want {
				t.Errorf("accepted TCP_QUICKACK = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestApplyClientNothingToSet checks that ApplyClient returns before
// SyscallConn, which allocates, when every option was inherited.
func TestApplyClientNothingToSet(t *testing.T) { // not parallel: AllocsPerRun
	o := &Options{Client: SockOpts{RecvBufferBytes: 1 << 16, Congestion: congestion(t)}}
	_, a := connect(t, listen(t, o)[0])
	var err error
	allocs := testing.AllocsPerRun(100, func() { err = o.ApplyClient(a) })
	if err != nil || allocs != 0 {
		t.Errorf("ApplyClient: err %v, %v allocs/op; want nil, 0", err, allocs)
	}
}

func TestListenKeepAliveOff(t *testing.T) {
	t.Parallel()
	l := listen(t, &Options{Client: SockOpts{KeepAliveIdle: -1}})[0]
	_, a := connect(t, l)
	if got := getInt(t, a, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
		t.Errorf("SO_KEEPALIVE = %d, want 0", got)
	}
}

func TestListenIPv6Only(t *testing.T) {
	t.Parallel()
	ls, err := (&Options{}).Listen(context.Background(), "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer closeListeners(ls)
	if got := getInt(t, ls[0], unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); got != 1 {
		t.Errorf("IPV6_V6ONLY = %d, want 1", got)
	}
	if got := getInt(t, ls[0], unix.SOL_SOCKET, unix.SO_PROTOCOL); got != unix.IPPROTO_TCP {
		t.Errorf("SO_PROTOCOL = %d, want IPPROTO_TCP", got)
	}
}

func TestListenRefusedOption(t *testing.T) {
	t.Parallel()
	o := &Options{Listeners: 3, Client: SockOpts{Congestion: "nosuchcc"}}
	ls, err := o.Listen(context.Background(), "127.0.0.1:0")
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Flag != "--client-congestion" || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Listen = %v, %v; want an OptionError for --client-congestion wrapping ENOENT", ls, err)
	}
}

func TestListenReusePort(t *testing.T) {
	t.Parallel()
	const n, conns = 4, 200
	ls := listen(t, &Options{Listeners: n})
	port := ls[0].Addr().(*net.TCPAddr).Port
	for _, l := range ls[1:] {
		if p := l.Addr().(*net.TCPAddr).Port; p != port {
			t.Fatalf("listener ports %d and %d differ", port, p)
		}
	}
	if got := listeningSockets(t, port); got != n {
		t.Fatalf("/proc/net/tcp lists %d listening sockets on port %d, want %d", got, port, n)
	}

	accepted := make(chan int, conns)
	for i, l := range ls {
		go acceptCount(t, l, i, accepted)
	}
	d := net.Dialer{Timeout: safety}
	for range conns {
		c, err := d.Dial("tcp4", ls[0].Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
	}
	var per [n]int
	for range conns {
		per[<-accepted]++
	}
	for i, k := range per {
		if k == 0 {
			t.Errorf("listener %d accepted none of %d connections: %v", i, conns, per)
		}
	}
	t.Logf("connections per listener: %v", per)
}

// acceptCount sends i for each connection l accepts, closing them, until l
// closes or its deadline passes.
func acceptCount(t *testing.T, l *net.TCPListener, i int, accepted chan<- int) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("accept on listener %d: %v", i, err)
			}
			return
		}
		c.Close()
		accepted <- i
	}
}

// listeningSockets counts the TCP LISTEN entries for port in /proc/net/tcp.
func listeningSockets(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	local, n := fmt.Sprintf(":%04X", port), 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st ...; st 0A is LISTEN
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && strings.HasSuffix(fs[1], local) && fs[3] == "0A" {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
