package tune

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/libp2p/go-reuseport"
)

// Listen opens o.Listeners TCP listeners on addr, all bound to the same port
// with SO_REUSEPORT, so that the kernel spreads new connections over them and
// each can have its own accept loop. With port 0 the first listener picks the
// port and the others join it. addr is an IP literal and port such as
// "127.0.0.1:1080" or "[::1]:1080"; an IPv6 address listens IPv6-only, so
// "[::]:1080" and "0.0.0.0:1080" can both be given. Any other form, such as a
// host name or ":1080", is resolved by package net with network "tcp".
//
// The listeners carry o.Client's options for their accepted sockets to
// inherit, plus fast open, defer-accept and backlog, and have MPTCP off. A
// refused option fails Listen with an *OptionError; Probe finds those first.
// The caller owns the listeners and closes them; on error none stay open.
func (o *Options) Listen(ctx context.Context, addr string) ([]*net.TCPListener, error) {
	cfg := *o
	lc := net.ListenConfig{Control: cfg.controlListener}
	lc.KeepAlive, lc.KeepAliveConfig = cfg.Client.goKeepAlive()
	lc.SetMultipathTCP(false)
	network := listenNetwork(addr)
	ls := make([]*net.TCPListener, 0, cfg.listeners())
	for range cfg.listeners() {
		l, err := cfg.listen(ctx, &lc, network, addr)
		if err != nil {
			return nil, errors.Join(err, closeListeners(ls))
		}
		ls = append(ls, l)
		addr = l.Addr().String() // the others join the first one's port
	}
	return ls, nil
}

func (o *Options) listen(ctx context.Context, lc *net.ListenConfig, network, addr string) (*net.TCPListener, error) {
	l, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tl := l.(*net.TCPListener)
	if err := o.applyTo(tl, afterListen, &o.Client, false); err != nil {
		return nil, errors.Join(err, tl.Close())
	}
	return tl, nil
}

// controlListener runs before bind on each listening socket: go-reuseport's
// SO_REUSEADDR and SO_REUSEPORT first, then the inherited client options and
// the listener's own.
func (o *Options) controlListener(network, address string, c syscall.RawConn) error {
	if err := reuseport.Control(network, address, c); err != nil {
		return o.optError(optReusePort, false, err)
	}
	return rawControl(c, func(fd int) error {
		if err := o.apply(fd, listenerSockOpts, &o.Client, false, false); err != nil {
			return err
		}
		if !o.Client.Nagle {
			// Accepted sockets inherit it: a bare accept (outside package
			// net, which sets it on each) needs no setsockopt for it.
			if err := setNoDelay(fd); err != nil {
				return err
			}
		}
		return o.apply(fd, listenerOpts, &o.Client, false, false)
	})
}

// listenNetwork picks "tcp4" or "tcp6" for an IP literal, so that package net
// sets IPV6_V6ONLY on IPv6 sockets, and "tcp" for anything else.
func listenNetwork(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	switch {
	case err != nil:
		return "tcp"
	case ap.Addr().Unmap().Is4():
		return "tcp4"
	}
	return "tcp6"
}

func closeListeners(ls []*net.TCPListener) error {
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// ApplyClient sets on an accepted client socket the options of o.Client that
// it did not inherit from its listener: TCP_NODELAY cleared for Nagle (Go sets
// it on every accept) and TCP_QUICKACK. It makes no system call when neither
// is configured. The caller keeps ownership of c.
func (o *Options) ApplyClient(c *net.TCPConn) error {
	return o.applyConn(c, &o.Client, false)
}

// ApplyClientFd is ApplyClient for a client socket accepted as a bare
// descriptor, which inherited TCP_NODELAY, or its absence for Nagle, from
// its listener: it sets TCP_QUICKACK when configured, and makes no system
// call otherwise.
func (o *Options) ApplyClientFd(fd int) error {
	if !o.Client.QuickAck {
		return nil
	}
	return o.apply(fd, []opt{optQuickAck}, &o.Client, false, false)
}

func (o *Options) applyConn(c *net.TCPConn, s *SockOpts, upstream bool) error {
	if !s.Nagle && !s.QuickAck {
		return nil
	}
	if s.Nagle {
		if err := c.SetNoDelay(false); err != nil {
			return o.optError(optNagle, upstream, err)
		}
	}
	if s.QuickAck {
		return o.applyTo(c, []opt{optQuickAck}, s, upstream)
	}
	return nil
}

// apply sets each configured option of ids on fd, stopping at the first
// refusal. udp skips options at the IPPROTO_TCP level.
func (o *Options) apply(fd int, ids []opt, s *SockOpts, upstream, udp bool) error {
	for _, id := range ids {
		if !o.set(id, s) || udp && id.tcpLevel() {
			continue
		}
		if err := setOpt(fd, id, o, s); err != nil {
			return o.optError(id, upstream, err)
		}
	}
	return nil
}

// applyTo is apply on an open socket.
func (o *Options) applyTo(sc syscall.Conn, ids []opt, s *SockOpts, upstream bool) error {
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return rawControl(rc, func(fd int) error { return o.apply(fd, ids, s, upstream, false) })
}

// rawControl runs f on the socket behind c.
func rawControl(c syscall.RawConn, f func(fd int) error) error {
	var err error
	if cerr := c.Control(func(fd uintptr) { err = f(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

// goKeepAlive gives the keepalive settings for package net: none where tune
// sets keepalive itself, before connect or on the listener, which saves four
// system calls per accepted socket.
func (s *SockOpts) goKeepAlive() (time.Duration, net.KeepAliveConfig) {
	if keepAliveBySockopt || s.KeepAliveIdle < 0 {
		return -1, net.KeepAliveConfig{}
	}
	return 0, net.KeepAliveConfig{Enable: true, Idle: s.KeepAliveIdle,
		Interval: s.KeepAliveInterval, Count: s.KeepAliveCount}
}
