package tune

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// ErrAborted is the error of a pending dial ended by the abort function
// DialFdYield (Linux's) handed its yield.
var ErrAborted = errors.New("tune: dial aborted")

// Dialer returns a *net.Dialer for upstream connections: o.Upstream's options
// are set on each socket before connect, along with o.SourceAddr,
// o.Interface and o.FastOpenConnect; o.DialTimeout bounds each dial, and MPTCP
// is off. Go sets TCP_NODELAY after connect, so o.Upstream.Nagle and QuickAck
// need ApplyUpstream on each dialled conn. The Dialer keeps a copy of o; it
// may be shared by many goroutines. It is meant for TCP: a "udp" dial gets only
// the socket-level options (buffers, mark, interface) and fails when
// SourceAddr, a *net.TCPAddr to the Dialer, is set.
func (o *Options) Dialer() *net.Dialer {
	cfg := *o
	d := &net.Dialer{Timeout: cfg.dialTimeout(), ControlContext: cfg.controlDial}
	d.KeepAlive, d.KeepAliveConfig = cfg.Upstream.goKeepAlive()
	if a := cfg.SourceAddr; a.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: a.AsSlice(), Zone: a.Zone()}
	}
	d.SetMultipathTCP(false)
	return d
}

// ApplyUpstream sets on a dialled upstream socket what Dialer could not set
// before connect: TCP_NODELAY cleared for o.Upstream.Nagle, and TCP_QUICKACK.
// It makes no system call when neither is configured. The caller keeps
// ownership of c.
func (o *Options) ApplyUpstream(c *net.TCPConn) error {
	return o.applyConn(c, &o.Upstream, true)
}

func (o *Options) controlDial(_ context.Context, network, _ string, c syscall.RawConn) error {
	udp := strings.HasPrefix(network, "udp")
	return rawControl(c, func(fd int) error {
		if err := o.apply(fd, dialSockOpts, &o.Upstream, true, udp); err != nil {
			return err
		}
		if o.SourceAddr.IsValid() && !udp {
			bindNoPort(fd) // package net binds LocalAddr after Control
		}
		return o.apply(fd, dialOpts, &o.Upstream, true, udp)
	})
}

// ListenUDP opens a UDP socket bound to laddr for a UDP ASSOCIATE, with the
// socket-level options of one side: o.Upstream's buffers and mark, and
// o.Interface, for the socket that sends to targets (upstream true), as a
// dialled TCP upstream gets them; o.Client's buffers and mark for the one
// that faces the client. TCP-only options are left out. An invalid address
// in laddr binds every address of network's families.
func (o *Options) ListenUDP(ctx context.Context, network string, laddr netip.AddrPort, upstream bool) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if upstream { // as Dialer's "udp" dials
			return o.controlDial(ctx, network, address, c)
		}
		return rawControl(c, func(fd int) error { return o.apply(fd, listenerSockOpts, &o.Client, false, true) })
	}}
	addr := laddr.String()
	if !laddr.Addr().IsValid() { // no address: every address
		addr = ":" + strconv.Itoa(int(laddr.Port()))
	}
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
