package tune

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

// dial connects d to a plain loopback listener, checks one byte each way and
// returns the dialled end, closed at cleanup.
func dial(t *testing.T, d *net.Dialer) *net.TCPConn {
	t.Helper()
	l := listen(t, &Options{})[0]
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	echoByte(t, c, l)
	return c
}

// allUpstreamOptions sets every upstream option, with allSockOpts's
// values and read-backs, for a dial from 127.0.0.2 on lo.
func allUpstreamOptions(t *testing.T) (*Options, []sockCase) {
	netnstest.MarkPermitted(t)
	s, cases := allSockOpts(t)
	return &Options{
		Upstream:        s,
		SourceAddr:      netip.MustParseAddr("127.0.0.2"),
		Interface:       "lo",
		FastOpenConnect: true,
	}, cases
}

func TestDialerUpstreamOptions(t *testing.T) {
	t.Parallel()
	o, cases := allUpstreamOptions(t)
	s := o.Upstream
	c := dial(t, o.Dialer())
	if got := getString(t, c, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "lo" {
		t.Errorf("SO_BINDTODEVICE = %q, want lo", got)
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != o.SourceAddr {
		t.Errorf("source address %v, want %v", got, o.SourceAddr)
	}
	if got := getInt(t, c, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT); got != 1 {
		t.Errorf("IP_BIND_ADDRESS_NO_PORT = %d, want 1 (a source address must not take a port of its own)", got)
	}
	if got := getInt(t, c, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT); got != 1 {
		t.Errorf("TCP_FASTOPEN_CONNECT = %d, want 1", got)
	}
	if got := getInt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 1 {
		t.Errorf("TCP_NODELAY before ApplyUpstream = %d, want 1 (set by package net)", got)
	}
	enterPingpong(t, c)
	if err := o.ApplyUpstream(c); err != nil {
		t.Fatalf("ApplyUpstream: %v", err)
	}
	checkSockOpts(t, c, s, cases)
}

func TestDialerDefaults(t *testing.T) {
	t.Parallel()
	o := &Options{}
	d := o.Dialer()
	if d.Timeout != defaultDialTimeout {
		t.Errorf("Timeout = %v, want %v", d.Timeout, defaultDialTimeout)
	}
	c := dial(t, d)
	for _, tc := range []sockCase{
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		if got := getInt(t, c, tc.level, tc.opt); got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, got, tc.want)
		}
	}
	if (&Options{DialTimeout: -1}).Dialer().Timeout != 0 {
		t.Error("negative DialTimeout: want no timeout")
	}
}

func TestDialerUDPSkipsTCPOptions(t *testing.T) {
	t.Parallel()
	o := &Options{Upstream: SockOpts{RecvBufferBytes: 96 << 10, Congestion: congestion(t), UserTimeout: 1000}}
	c, err := o.Dialer().Dial("udp4", "127.0.0.1:9") // connect only: nothing is sent
	if err != nil {
		t.Fatalf("udp dial: %v", err)
	}
	defer c.Close()
	if got := getInt(t, c.(*net.UDPConn), unix.SOL_SOCKET, unix.SO_RCVBUF); got != 2*(96<<10) {
		t.Errorf("SO_RCVBUF = %d, want %d", got, 2*(96<<10))
	}
}

func TestDialerRefusedOption(t *testing.T) {
	t.Parallel()
	o := &Options{Interface: "nosuchif0"}
	_, err := o.Dialer().Dial("tcp4", "127.0.0.1:9")
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Flag != "--interface" || !errors.Is(err, unix.ENODEV) {
		t.Fatalf("Dial = %v; want an OptionError for --interface wrapping ENODEV", err)
	}
}

// TestListenUDPOptions: a UDP ASSOCIATE's sockets get the socket-level
// options of their side, the upstream one --interface too, so that --mark
// and --interface hold for UDP as for TCP (the build before opened both
// with net.ListenUDP: unmarked, on any device).
func TestListenUDPOptions(t *testing.T) {
	t.Parallel()
	netnstest.MarkPermitted(t)
	o := &Options{
		Upstream:  SockOpts{Mark: 0x2a, RecvBufferBytes: 96 << 10, Congestion: congestion(t)},
		Client:    SockOpts{Mark: 0x2b, SendBufferBytes: 80 << 10},
		Interface: "lo",
	}
	up, err := o.ListenUDP(t.Context(), "udp4", netip.MustParseAddrPort("127.0.0.1:0"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	cl, err := o.ListenUDP(t.Context(), "udp", netip.MustParseAddrPort("[::1]:0"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, tc := range []struct {
		name       string
		c          *net.UDPConn
		level, opt int
		want       int
	}{
		{"upstream SO_MARK", up, unix.SOL_SOCKET, unix.SO_MARK, 0x2a},
		{"upstream SO_RCVBUF", up, unix.SOL_SOCKET, unix.SO_RCVBUF, 2 * (96 << 10)},
		{"client SO_MARK", cl, unix.SOL_SOCKET, unix.SO_MARK, 0x2b},
		{"client SO_SNDBUF", cl, unix.SOL_SOCKET, unix.SO_SNDBUF, 2 * (80 << 10)},
	} {
		if got := getInt(t, tc.c, tc.level, tc.opt); got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, got, tc.want)
		}
	}
	if got := getString(t, up, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "lo" {
		t.Errorf("upstream SO_BINDTODEVICE = %q, want lo", got)
	}
	if got := getString(t, cl, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "" {
		t.Errorf("client SO_BINDTODEVICE = %q, want none (--interface is for the upstream side)", got)
	}
	if got := up.LocalAddr().(*net.UDPAddr).AddrPort(); !got.Addr().Is4() || got.Port() == 0 {
		t.Errorf("upstream bound to %v; want 127.0.0.1 and a port", got)
	}
	// No address (no --source-addr): every address of the family.
	anyAddr, err := o.ListenUDP(t.Context(), "udp4", netip.AddrPort{}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer anyAddr.Close()
	if got := anyAddr.LocalAddr().(*net.UDPAddr).AddrPort(); !got.Addr().IsUnspecified() || got.Port() == 0 {
		t.Errorf("no address: bound to %v; want 0.0.0.0 and a port", got)
	}
}
