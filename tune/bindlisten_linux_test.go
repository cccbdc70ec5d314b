package tune

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

// TestListenUpstreamOptions reads back, on the listener and on a socket it
// accepted, every option of Upstream (not Client's) and the device: the
// options a dialled upstream socket gets, set once on the listener for its
// sockets to inherit; ApplyUpstream adds Nagle and QuickAck.
func TestListenUpstreamOptions(t *testing.T) {
	t.Parallel()
	netnstest.MarkPermitted(t)
	s, cases := allSockOpts(t)
	o := &Options{Upstream: s, Client: SockOpts{UserTimeout: 9 * time.Second, Mark: 0x77}, Interface: "lo"}
	l, err := o.ListenUpstream(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatalf("ListenUpstream: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	l.SetDeadline(deadline())
	for _, tc := range cases {
		if tc.opt == unix.TCP_NODELAY || tc.opt == unix.TCP_QUICKACK {
			continue // per socket: ApplyUpstream's
		}
		if got := getInt(t, l, tc.level, tc.opt); got != tc.want {
			t.Errorf("listener %s = %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := getString(t, l, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "lo" {
		t.Errorf("listener SO_BINDTODEVICE = %q, want lo", got)
	}
	_, a := connect(t, l)
	enterPingpong(t, a)
	if err := o.ApplyUpstream(a); err != nil {
		t.Fatalf("ApplyUpstream: %v", err)
	}
	checkSockOpts(t, a, s, cases)
	if got := getString(t, a, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); got != "lo" {
		t.Errorf("accepted SO_BINDTODEVICE = %q, want lo", got)
	}
}

// TestUpstreamSource: the source of a route on loopback, SourceAddr where it
// is of the destination's family, and the lookup's error where there is no
// route to tell (a link-local address without its zone).
func TestUpstreamSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		o    Options
		dst  string
		want string
	}{
		{"route", Options{}, "127.0.0.5", "127.0.0.1"},
		{"source", Options{SourceAddr: netip.MustParseAddr("127.0.0.2")}, "127.0.0.5", "127.0.0.2"},
		{"mapped-source", Options{SourceAddr: netip.MustParseAddr("::ffff:127.0.0.2")}, "127.0.0.5", "127.0.0.2"},
		{"source-other-family", Options{SourceAddr: netip.IPv6Loopback()}, "127.0.0.5", "127.0.0.1"},
	} {
		got, err := tc.o.UpstreamSource(ctx, netip.MustParseAddr(tc.dst))
		if err != nil || got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: UpstreamSource(%s) = %v, %v; want %s", tc.name, tc.dst, got, err, tc.want)
		}
	}
	if got, err := (&Options{}).UpstreamSource(ctx, netip.MustParseAddr("fe80::1")); !errors.Is(err, unix.EINVAL) {
		t.Errorf("UpstreamSource(fe80::1) = %v, %v; want EINVAL (no zone)", got, err)
	}
}
