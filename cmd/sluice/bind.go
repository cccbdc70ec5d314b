package main

import (
	"context"
	"errors"
	"fmt"
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

// errPeerNotAllowed is the BIND failure for a peer whose IP is not the one the
// client named in DST.ADDR.
var errPeerNotAllowed = fmt.Errorf("bind: peer address differs from DST.ADDR: %w", handshake.ErrNotAllowed)

// bind serves a BIND request (RFC 1928 section 4): listen, first reply with
// the listening address, accept exactly one peer within the bind timeout,
// second reply with the peer's address, then relay. The listening socket is
// closed on every path. It returns the peer conn (owned by the caller), or an
// error after which the caller sends ReplyFor(err).
//
// The destination rules are applied to a DST.ADDR that is an IP (or, for a
// name, to the name when no rule looks at addresses) before listening, and
// to the peer that connects (peerAllowed: a name DST.ADDR gave lets in only
// its own addresses); rules under which no peer at all could pass refuse it
// before listening. A rule's ports match DST.PORT at both checks, never the
// port the peer connects from (ephemeral, or 20 for active FTP: its own
// choice).
func (s *server) bind(ctx context.Context, lv *live, c *net.TCPConn, req *handshake.Request) (*net.TCPConn, error) {
	want := req.Addr
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
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // splice falls back to copying on MPTCP sockets
	ip := bindIP(c, want)
	l, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return nil, err
	}
	tl := l.(*net.TCPListener)
	defer tl.Close()
	if err := req.WriteReply(c, handshake.Succeeded, tl.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		return nil, errReplied{err}
	}
	tl.SetDeadline(time.Now().Add(lv.bindTimeout))
	// Watch the control connection while waiting: if the client goes away, the
	// listener is closed and AcceptTCP returns.
	var gone atomic.Bool
	stop := watchClose(c, func() { gone.Store(true); tl.Close() })
	// A drain that runs out ends the wait too, as it ends relayed sessions.
	stopCtx := context.AfterFunc(ctx, func() { tl.Close() })
	peer, err := tl.AcceptTCP()
	stopCtx()
	stop()
	if err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, handshake.ErrTTLExpired
		case gone.Load():
			return nil, errReplied{errClientLeft} // nobody to reply to
		}
		return nil, err
	}
	pa := peer.RemoteAddr().(*net.TCPAddr).AddrPort()
	// The peer's address carries its zone (a link-local peer); DST.ADDR,
	// from the wire, has none.
	if want.Type != handshake.AddrDomain && want.IP.IsValid() && !want.IP.IsUnspecified() &&
		want.IP != pa.Addr().Unmap().WithZone("") {
		peer.Close()
		return nil, errPeerNotAllowed
	}
	if err := s.peerAllowed(ctx, p, want, pa.Addr()); err != nil {
		peer.Close()
		return nil, err
	}
	if err := handshake.WriteReply(c, handshake.Succeeded, pa); err != nil {
		peer.Close()
		return nil, errReplied{err}
	}
	return peer, nil
}

// peerAllowed applies the destination rules to a BIND's peer at ip, with
// DST.PORT as its port. For a name in DST.ADDR the rules are evaluated with
// the name and without it: a denial with the name refuses the peer (a claim
// never widens the rules), an allowance without it lets the peer in, and
// where only the name lets it in (a domain allow rule), the name is
// resolved as for CONNECT and the peer must be one of its addresses: a
// domain rule never lets in a peer from an address the name lacks. Only
// that last case looks the name up; a lookup that fails is its DNS error
// (reply 0x04, as for a CONNECT to the name), a peer the name does not
// resolve to errDenied (0x02).
func (s *server) peerAllowed(ctx context.Context, p *policy, want handshake.Addr, ip netip.Addr) error {
	if want.Type != handshake.AddrDomain {
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
	ctx, cancel := s.withDialTimeout(ctx)
	defer cancel()
	ips, err := s.resolve(ctx, nil, want)
	if err != nil {
		return fmt.Errorf("bind: resolving DST.ADDR to check the peer: %w", err)
	}
	if len(ips) == 0 {
		return noSuchHost(want)
	}
	bare := ip.Unmap().WithZone("")
	for _, a := range ips {
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

// bindIP picks the address to listen on for BIND: the local address of the
// route to DST.ADDR (a connected UDP socket tells it; no packet is sent),
// or the address the client reached sluice on when that cannot be told.
func bindIP(c *net.TCPConn, want handshake.Addr) netip.Addr {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
	if want.Type == handshake.AddrDomain || !want.IP.IsValid() || want.IP.IsUnspecified() {
		return local
	}
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(want.IP, 9)))
	if err != nil {
		return local
	}
	defer u.Close()
	return u.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
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
