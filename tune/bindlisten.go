package tune

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// The options a connection from the upstream side (a SOCKS BIND's peer)
// gets on its listener, as a dialled upstream socket gets them before
// connect: those Linux copies to the sockets a listener accepts, and the
// device. Nagle and QuickAck are ApplyUpstream's, after accept; the dial's
// own (fast open, smart connect, source ports) have no meaning here.
var upstreamListenOpts = concat(listenerSockOpts, []opt{optInterface})

// routeOpts are the options that steer an upstream socket's route lookup:
// policy routing by mark, and the device it is pinned to.
var routeOpts = []opt{optMark, optInterface}

// ListenUpstream opens a TCP listener on laddr for a connection from the
// upstream side, such as a SOCKS BIND's peer, tuned as a dialled upstream
// socket is: o.Upstream's buffers, keepalive, user timeout, congestion
// control, not-sent low-water mark and mark, which Linux copies to the
// sockets it accepts, and o.Interface (SO_BINDTODEVICE: only connections
// that arrive on that device are accepted, and their packets leave by
// it). MPTCP is off. ApplyUpstream sets the rest (Nagle, QuickAck) on each
// accepted conn. A refused option fails it with an *OptionError; Probe
// finds those first. The caller owns the listener.
func (o *Options) ListenUpstream(ctx context.Context, laddr netip.AddrPort) (*net.TCPListener, error) {
	cfg := *o
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return rawControl(c, func(fd int) error { return cfg.apply(fd, upstreamListenOpts, &cfg.Upstream, true, false) })
	}}
	lc.KeepAlive, lc.KeepAliveConfig = cfg.Upstream.goKeepAlive()
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, "tcp", laddr.String())
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// UpstreamSource returns the local address an upstream connection to dst
// would come from, after looking up the route to dst as a dial does: with
// o.Upstream's mark and o.Interface (policy routing by mark, a device the
// upstream traffic is pinned to), and from o.SourceAddr when it is of dst's
// family, which is then the address returned; else it is the route's
// preferred source. It connects a UDP socket, which sends nothing, so the
// lookup is the one for a UDP flow. Its error is the lookup's, such as
// syscall.ENETUNREACH where no route leads to dst, or EINVAL for a
// link-local dst without a zone (and no Interface).
func (o *Options) UpstreamSource(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	d := net.Dialer{ControlContext: func(_ context.Context, _, _ string, c syscall.RawConn) error {
		return rawControl(c, func(fd int) error { return o.apply(fd, routeOpts, &o.Upstream, true, true) })
	}}
	if src := o.SourceAddr.Unmap(); src.IsValid() && src.Is4() == dst.Unmap().Is4() {
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(dst, 9).String()) // discard: any port would do
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
