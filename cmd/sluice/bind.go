package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/handshake"
)

// errClientLeft ends a BIND whose client closed or reset its connection
// while waiting for the peer.
var errClientLeft = errors.New("bind: client left while waiting for the peer")

// errPeerNotAllowed refuses a BIND peer whose IP is not the one the client
// named in DST.ADDR.
var errPeerNotAllowed = fmt.Errorf("bind: peer address differs from DST.ADDR: %w", handshake.ErrNotAllowed)

// bind serves a BIND request (RFC 1928 section 4): listen, first reply with
// the listening address, wait within the bind timeout for the peer the
// client named (awaitPeer), second reply with the peer's address, then
// relay. The listening socket is closed on every path. It returns the peer
// conn (owned by the caller), or an error after which the caller sends
// ReplyFor(err).
//
// The destination rules are applied to a DST.ADDR that is an IP (or, for a
// name, to the name when no rule looks at addresses, and else as far as they
// can be without the peer's address: mayAllowTo) before listening, and
// to each peer that connects (peerAllowed: a name DST.ADDR gave lets in only
// its own addresses); rules under which no peer at all could pass refuse it
// before listening. A rule's ports match DST.PORT at both checks, never the
// port the peer connects from (ephemeral, or 20 for active FTP: its own
// choice). A name that is an IP literal is that address (literalAddr).
func (s *server) bind(ctx context.Context, lv *live, c *net.TCPConn, req *handshake.Request) (*net.TCPConn, error) {
	want := literalAddr(req.Addr)
	want.IP = want.IP.Unmap() // ::ffff:0.0.0.0 is all-zeros too
	p := lv.rules
	switch {
	case p == nil:
	case !p.mayAllow(cmdBind):
		// No peer could pass the rules: no listening socket, no first
		// reply, whatever DST.ADDR names.
		return nil, errDenied{}
	case want.Type != handshake.AddrDomain && want.IP.IsValid() && !want.IP.IsUnspecified():
		if !p.allowed(cmdBind, nil, want.IP, want.Port) {
			return nil, errDenied{want.IP.Unmap()}
		}
	case want.Type == handshake.AddrDomain && !p.needsIP:
		if !p.allowed(cmdBind, want.Name, netip.Addr{}, want.Port) {
			return nil, errDenied{}
		}
	case !p.mayAllowTo(cmdBind, want.Name, want.Port):
		// A name or 0.0.0.0: the peer's address is not known yet, but
		// rules that deny every address for this name and DST.PORT
		// (a deny on the name, or on the port) refuse it now, as they
		// would every peer after the first reply.
		return nil, errDenied{}
	}
	ip, err := s.bindIP(ctx, c, want)
	if err != nil {
		return nil, err
	}
	// The peer is an upstream connection that comes in: its listener gets
	// the upstream side's options (mark, device, buffers, keepalive, ...),
	// which the accepted socket inherits, with MPTCP off (splice falls back
	// to copying on MPTCP sockets).
	tl, err := s.tune.ListenUpstream(ctx, netip.AddrPortFrom(ip, 0))
	if err != nil {
		return nil, err
	}
	defer tl.Close()
	if err := req.WriteReply(c, handshake.Succeeded, tl.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		return nil, errReplied{err}
	}
	tl.SetDeadline(time.Now().Add(lv.bindTimeout))
	peer, pa, err := s.awaitPeer(ctx, p, c, tl, want)
	if err != nil {
		return nil, err
	}
	if err := s.tune.ApplyUpstream(peer); err != nil {
		s.log.Debug("upstream socket options", "peer", pa.String(), "err", err) // as dial's: Probe warned
	}
	if err := handshake.WriteReply(c, handshake.Succeeded, pa); err != nil {
		peer.Close()
		return nil, errReplied{err}
	}
	return peer, nil
}

// awaitPeer accepts connections on tl until one comes from the peer the
// client named (peerAllowed) and returns it with its address. A peer
// refused is reset, counted (sluice_refused_total's destination_rule) and
// logged at debug level, and the wait goes on without a reply: the second
// reply answers the anticipated connection (RFC 1928), so a stranger who
// reaches the port first (a port scan) cannot end someone else's BIND. The
// wait ends at tl's deadline (ErrTTLExpired, saying how many peers were
// refused), when the client leaves or ctx ends (a drain): both close tl;
// or on an error no later peer could change (DST.ADDR's name does not
// resolve).
//
// Invariant of the loop: one peer at a time, closed before the next accept,
// and nothing kept per refused peer but a count; the name's addresses are
// looked up at most once (ips). A flood of strangers costs an accept, a
// rules check and a reset each, no memory and no DNS query, and the kernel
// bounds what waits in the backlog.
func (s *server) awaitPeer(ctx context.Context, p *policy, c *net.TCPConn, tl *net.TCPListener, want handshake.Addr) (*net.TCPConn, netip.AddrPort, error) {
	// Watch the control connection while waiting: if the client goes
	// away, the listener is closed and AcceptTCP returns.
	var gone atomic.Bool
	stop := watchClose(c, func() { gone.Store(true); tl.Close() })
	defer stop()
	// A drain that runs out ends the wait too, as it ends relayed sessions.
	stopCtx := context.AfterFunc(ctx, func() { tl.Close() })
	defer stopCtx()
	var ips []netip.Addr
	refused := 0
	for {
		peer, err := tl.AcceptTCP()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && refused > 0:
			return nil, netip.AddrPort{}, fmt.Errorf("bind: %d peers refused, none let in before --bind-timeout: %w", refused, handshake.ErrTTLExpired)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, netip.AddrPort{}, handshake.ErrTTLExpired
		case gone.Load():
			return nil, netip.AddrPort{}, errReplied{errClientLeft} // nobody to reply to
		default:
			return nil, netip.AddrPort{}, err
		}
		pa := peer.RemoteAddr().(*net.TCPAddr).AddrPort()
		err = s.peerAllowed(ctx, p, want, pa.Addr(), &ips)
		if err == nil {
			return peer, pa, nil
		}
		if !errors.Is(err, handshake.ErrNotAllowed) {
			peer.Close()
			return nil, netip.AddrPort{}, err
		}
		refused++
		s.metrics.refuse(refDestRule)
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("bind: peer refused", "client", c.RemoteAddr(), "peer", pa.String(), "err", err)
		}
		// A reset, not a FIN: no TIME_WAIT is left behind for each
		// stranger, and it hears at once that nobody serves it.
		peer.SetLinger(0)
		peer.Close()
	}
}

// peerAllowed applies the destination rules to a BIND's peer at ip, with
// DST.PORT as its port; for a non-zero IP in DST.ADDR the peer must come
// from it (errPeerNotAllowed). For a name in DST.ADDR the rules are
// evaluated with the name and without it: a denial with the name refuses
// the peer (a claim never widens the rules), an allowance without it lets
// the peer in, and where only the name lets it in (a domain allow rule), the
// name is resolved as for CONNECT and the peer must be one of its addresses:
// a domain rule never lets in a peer from an address the name lacks. Only
// that last case looks the name up, and only while *ips is nil: the
// addresses are kept there for the BIND's next peers. A lookup that fails
// is its DNS error (reply 0x04, as for a CONNECT to the name), a peer the
// name does not resolve to errDenied (0x02).
func (s *server) peerAllowed(ctx context.Context, p *policy, want handshake.Addr, ip netip.Addr, ips *[]netip.Addr) error {
	bare := ip.Unmap().WithZone("") // the peer's zone (link-local): DST.ADDR, from the wire, has none
	if want.Type != handshake.AddrDomain {
		if want.IP.IsValid() && !want.IP.IsUnspecified() && want.IP != bare {
			return errPeerNotAllowed
		}
		if !p.allowed(cmdBind, nil, ip, want.Port) {
			return errDenied{ip.Unmap()}
		}
		return nil
	}
	if !p.allowed(cmdBind, want.Name, ip, want.Port) {
		return errDenied{ip.Unmap()}
	}
	if p.allowed(cmdBind, nil, ip, want.Port) {
		return nil
	}
	if *ips == nil {
		ctx, cancel := s.withDialTimeout(ctx)
		defer cancel()
		addrs, err := s.resolve(ctx, nil, want)
		if err != nil {
			return fmt.Errorf("bind: resolving DST.ADDR to check the peer: %w", err)
		}
		if len(addrs) == 0 {
			return noSuchHost(want)
		}
		*ips = addrs
	}
	for _, a := range *ips {
		if a.Unmap().WithZone("") == bare {
			return nil
		}
	}
	return errDenied{ip.Unmap()}
}

// errReplied marks an error that happened while writing a reply: no further
// reply can be sent.
type errReplied struct{ error }

func (e errReplied) Unwrap() error { return e.error }

// literalAddr is a, or the address a names when it is a name that is an IP
// literal ("127.0.0.1", "::1"), as the resolver reads one: a BIND to it
// then waits for a peer from that address, and the rules check it before
// listening, as for the same address sent as one. Taken for a name, any
// peer could come, and a deny of the address refused each peer only.
func literalAddr(a handshake.Addr) handshake.Addr {
	if a.Type != handshake.AddrDomain {
		return a
	}
	ip, err := netip.ParseAddr(string(a.Name))
	if err != nil {
		return a
	}
	return handshake.AddrFromAddrPort(netip.AddrPortFrom(ip, a.Port)) // unmapped, no zone
}

// bindIP picks the address to listen on for BIND, the one the client tells
// its peer to connect to: the address the relay's connections to DST.ADDR
// come from (tune's UpstreamSource), which is --source-addr when set and of
// DST.ADDR's family, or else the local address of the route to DST.ADDR,
// looked up with the upstream sockets' --mark and --interface, as a
// CONNECT's dial is routed. For a DST.ADDR that is all-zeros or a name it
// is --source-addr, or the address the client reached sluice on.
//
// A lookup that finds no route to DST.ADDR (ENETUNREACH, or EHOSTUNREACH
// for an unreachable route) ends the BIND with that error, reply 0x03 or
// 0x04, as a CONNECT to it gets: the kernel could not answer the peer's SYN
// either, so the peer could never connect. Any other lookup error (EINVAL
// for a link-local DST.ADDR, which has no zone on the wire; EPERM or EACCES,
// which a rule for UDP alone may cause) falls back to --source-addr when
// it is of DST.ADDR's family (the upstream connections come from it all
// the same), or else to the address the client reached sluice on.
func (s *server) bindIP(ctx context.Context, c *net.TCPConn, want handshake.Addr) (netip.Addr, error) {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
	if want.Type == handshake.AddrDomain || !want.IP.IsValid() || want.IP.IsUnspecified() {
		if src := s.tune.SourceAddr.Unmap(); src.IsValid() {
			return src, nil
		}
		return local, nil
	}
	ip, err := s.tune.UpstreamSource(ctx, want.IP)
	switch {
	case err == nil:
		return ip, nil
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return netip.Addr{}, fmt.Errorf("bind: no route to DST.ADDR %v for the peer: %w", want.IP, err)
	}
	if src := s.tune.SourceAddr.Unmap(); src.IsValid() && reachableFrom(src, want.IP) {
		return src, nil
	}
	return local, nil
}

// watchClose calls onClose if the peer of c closes or resets while the watch
// is on, without consuming any byte c has received. The returned stop ends
// the watch and waits for it; afterwards c's read deadline is cleared.
func watchClose(c *net.TCPConn, onClose func()) (stop func()) {
	rc, err := c.SyscallConn()
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	go watchPeer(rc, onClose, done)
	return func() {
		c.SetReadDeadline(time.Unix(1, 0))
		<-done
		c.SetReadDeadline(time.Time{})
	}
}

// watchPeer waits until rc is readable and calls onClose if that is because
// of EOF or an error. Bytes the client sends meanwhile stay queued for the
// relay; where the system can tell a FIN or reset behind them (hungUp), the
// watch goes on past them. It closes done when it returns.
func watchPeer(rc syscall.RawConn, onClose func(), done chan<- struct{}) {
	defer close(done)
	var b [1]byte
	closed := false
	err := rc.Read(func(fd uintptr) bool {
		n, err := peek(fd, b[:])
		switch {
		case err == syscall.EAGAIN:
			return false // wait until readable
		case err != nil || n == 0:
			closed = true
		default: // bytes wait, and maybe a FIN or reset behind them
			hung, known := hungUp(fd)
			if known && !hung {
				return false // wait for more: bytes, a FIN, a reset
			}
			closed = hung
		}
		return true // EOF, an error, or data where a FIN cannot be told: stop watching
	})
	if closed || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded)) {
		onClose()
	}
}
