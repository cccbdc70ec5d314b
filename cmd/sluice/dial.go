package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"sluice/handshake"
)

// connect dials a CONNECT target, applying the destination rules to the
// address actually dialled: a domain target is resolved here, and when a
// rule looks at addresses every address it resolves to must be allowed;
// those addresses are dialled, never the name again (no DNS rebinding),
// and the resolver gets the name as the rules saw it, byte for byte. An
// address target is dialled as a bare socket, returned as fd (c nil), when
// s.bareSockets; otherwise fd is -1, as for a name without them. Before
// anything that may wait (a name to resolve, a connect still in progress)
// the session leaves its accept loop (client.handOn); a bare dial that
// completes at once does not. A client that leaves while the dial is
// pending ends it (waiter.watch), errClientGone.
func (s *server) connect(ctx context.Context, lv *live, cl *client, a handshake.Addr) (c *net.TCPConn, fd int, err error) {
	if cl.tc != nil {
		cl.w = s.waiter // package net's client: to watch its dial, the one use it has for a waiter
	}
	p := lv.rules
	var check *policy // the rules each address of a name must pass
	switch {
	case p == nil:
	case a.Type != handshake.AddrDomain:
		if !p.allowed(cmdConnect, nil, a.IP, a.Port) {
			return nil, -1, errDenied{a.IP.Unmap()}
		}
	case !p.needsIP:
		if !p.allowed(cmdConnect, a.Name, netip.Addr{}, a.Port) {
			return nil, -1, errDenied{}
		}
	case !p.mayAllowTo(cmdConnect, a.Name, a.Port):
		// Denied whatever it resolves to (a rule on the name alone):
		// no lookup, which would carry the name to its domain's servers.
		return nil, -1, errDenied{}
	default:
		check = p
	}
	if a.Type == handshake.AddrDomain {
		// Never through host:port text for net.Dialer to split again:
		// SplitHostPort reads "[evil.test]:80" as evil.test, which a
		// deny of that name would not have matched.
		cl.handOn()
		if s.bareSockets {
			fd, err := dialNameWatched(ctx, s, cl, check, a, (*server).dialNameFd)
			return nil, fd, err
		}
		c, err := dialNameWatched(ctx, s, cl, check, a, (*server).dialResolved)
		return c, -1, err
	}
	start := time.Now()
	if s.bareSockets {
		// Keepalive comes later, from relay.Options.Mature (or
		// startRelay), for sessions that live long enough to need it.
		// A connect that waits has the waiter watch the client
		// meanwhile (client.dialing).
		fd, err := s.tune.DialFdLate(ctx, netip.AddrPortFrom(a.IP, a.Port), cl.dialing)
		if err = dialEnded(cl, err); err != nil {
			s.fdPressure(err)
			return nil, -1, err
		}
		s.metrics.dialDone(time.Since(start))
		return nil, fd, nil
	}
	cl.handOn()
	c, err = s.dialWatched(ctx, cl, a)
	if err == nil {
		s.metrics.dialDone(time.Since(start))
	}
	return c, -1, err
}

// errClientGone ends a CONNECT whose client left while its dial was still
// pending: reset its connection, or closed it with nothing sent for the
// target (waiter.leftLocked).
var errClientGone = errors.New("connect: client left while its dial was pending")

// dialNameWatched dials a name for cl with dial (dialNameFd, or
// dialResolved), cl's leaving canceling the dial (resolution included) when
// the server has a waiter to watch for it (waiter.watch): a name's dial
// always waits, so the context this takes is made only where it is needed.
func dialNameWatched[C any](ctx context.Context, s *server, cl *client, p *policy, a handshake.Addr, dial func(*server, context.Context, *policy, handshake.Addr) (C, error)) (C, error) {
	if !cl.watchable() {
		return dial(s, ctx, p, a)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cl.w.watch(cl, cancel)
	c, err := dial(s, ctx, p, a)
	return c, dialEnded(cl, err)
}

// dialWatched is dial for cl, whose leaving cancels it when the server has
// a waiter to watch for it (waiter.watch). The context canceled is the dial
// timeout's, made here rather than by net.Dialer, which makes none under a
// deadline as early as its own: the watch adds no allocation to a dial that
// has a timeout, but its map entry and deadline in the waiter (watch).
func (s *server) dialWatched(ctx context.Context, cl *client, a handshake.Addr) (*net.TCPConn, error) {
	if !cl.watchable() {
		return s.dial(ctx, a)
	}
	var cancel context.CancelFunc
	if s.dialTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, s.dialTimeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	cl.w.watch(cl, cancel)
	c, err := s.dial(ctx, a)
	return c, dialEnded(cl, err)
}

// dialEnded ends the watch of cl's dial (client.dialed) and returns the
// error the session goes on with: errClientGone where the client left
// meanwhile, unless the dial failed for a reason of its own that the
// client's leaving at that same instant did not cause, and that must still
// be counted: a rule's denial (errDenied: sluice_refused_total's
// destination_rule, and the 0x02 reply, lost on a socket that is gone) or
// the process out of descriptors (fdPressure's Trim).
func dialEnded(cl *client, err error) error {
	gone := cl.dialed(err) // ends the watch whatever err is
	if errors.Is(err, handshake.ErrNotAllowed) || outOfFds(err) {
		return err
	}
	return gone
}

// reachableFrom reports whether a socket bound to src (none: dual-stack)
// can reach ip: only an address of src's family, as net.Dialer picks them.
func reachableFrom(src, ip netip.Addr) bool {
	return !src.IsValid() || ip.Unmap().Is4() == src.Unmap().Is4()
}

// dialResolved resolves a domain target with the dialer's resolver (rules
// checked as in resolve) and dials its addresses through package net, as
// dialNameFd does with bare sockets: Happy Eyeballs between the families,
// each address its share of the dial timeout.
func (s *server) dialResolved(ctx context.Context, p *policy, a handshake.Addr) (*net.TCPConn, error) {
	return dialName(ctx, s, p, a, dialNet, func(c *net.TCPConn) { c.Close() })
}

// dialNet dials one address through package net, for dialName, with its
// zone (handshake.AddrFromAddrPort drops it: the wire has none).
func dialNet(ctx context.Context, s *server, ap netip.AddrPort) (*net.TCPConn, error) {
	a := handshake.AddrFromAddrPort(ap)
	a.IP = ap.Addr().Unmap()
	return s.dial(ctx, a)
}

// withDialTimeout bounds ctx by the dial timeout, resolution included, when
// there is one.
func (s *server) withDialTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.dialTimeout > 0 {
		return context.WithTimeout(ctx, s.dialTimeout)
	}
	return ctx, func() {}
}

// resolve looks a domain target up with the dialer's resolver
// (lookupZoned) and, with p (nil: no rules), checks that every address it
// resolves to is allowed.
func (s *server) resolve(ctx context.Context, p *policy, a handshake.Addr) ([]netip.Addr, error) {
	r := s.dialer.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := lookupZoned(ctx, r, string(a.Name))
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if p != nil && !p.allowed(cmdConnect, a.Name, ip, a.Port) {
			return nil, errDenied{ip}
		}
	}
	return ips, nil
}

// lookupZoned looks host up with r: IPv4 addresses unmapped, and a
// link-local address from the hosts file with its zone (fe80::1%eth0), as
// net.Dialer's dial of the name keeps it; LookupNetIP drops it, and without
// it the kernel refuses to bind, connect or send to the address.
func lookupZoned(ctx context.Context, r *net.Resolver, host string) ([]netip.Addr, error) {
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]netip.Addr, 0, len(addrs))
	for _, ia := range addrs {
		if ip, ok := netip.AddrFromSlice(ia.IP); ok {
			ips = append(ips, ip.Unmap().WithZone(ia.Zone)) // no zone on an IPv4 address
		}
	}
	return ips, nil
}

func noSuchHost(a handshake.Addr) error {
	return &net.DNSError{Err: "no such host", Name: string(a.Name), IsNotFound: true}
}

// defaultFallbackDelay is how long the first address family has before the
// other is tried beside it (RFC 8305's Connection Attempt Delay; net.Dialer's
// default): server.fallbackDelay.
const defaultFallbackDelay = 300 * time.Millisecond

// dialNameFd resolves a domain target (rules checked as in resolve) and
// dials it as a bare socket (tune.DialFdLate), as net.Dialer would dial the
// name (dialName). The session then takes the same path as a CONNECT to an
// address.
func (s *server) dialNameFd(ctx context.Context, p *policy, a handshake.Addr) (int, error) {
	fd, err := dialName(ctx, s, p, a, dialFd, func(fd int) { sysClose(fd) })
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// dialFd dials one address as a bare socket, for dialName.
func dialFd(ctx context.Context, s *server, ap netip.AddrPort) (int, error) {
	fd, err := s.tune.DialFdLate(ctx, ap, nil)
	if err != nil {
		s.fdPressure(err)
	}
	return fd, err
}

// dialName resolves a domain target (rules checked as in resolve) and
// dials its addresses with dial, as net.Dialer would dial the name: the
// addresses of the first one's family in turn, each with an equal share of
// what is left of the dial timeout (at least 2 s), and when the name has
// addresses of both families, the other family's in turn beside them after
// s.fallbackDelay, or at once when the first family failed (Happy Eyeballs);
// the first connection made wins, and drop closes one that lost. With a
// source address only the addresses of its family are dialled.
func dialName[C any](ctx context.Context, s *server, p *policy, a handshake.Addr, dial dialFunc[C], drop func(C)) (C, error) {
	var none C
	start := time.Now()
	ctx, cancel := s.withDialTimeout(ctx)
	defer cancel()
	ips, err := s.resolve(ctx, p, a)
	if err != nil {
		return none, err
	}
	if len(ips) == 0 {
		return none, noSuchHost(a)
	}
	if src := s.tune.SourceAddr; src.IsValid() {
		// As net.Dialer: only the addresses of the source's family.
		ips = slices.DeleteFunc(ips, func(ip netip.Addr) bool { return !reachableFrom(src, ip) })
		if len(ips) == 0 {
			return none, &net.AddrError{Err: "no suitable address found", Addr: string(a.Name)}
		}
	}
	var primaries, fallbacks []netip.Addr
	for _, ip := range ips {
		if ip.Unmap().Is4() == ips[0].Unmap().Is4() {
			primaries = append(primaries, ip)
		} else {
			fallbacks = append(fallbacks, ip)
		}
	}
	var c C
	if len(fallbacks) == 0 {
		c, err = dialSerial(ctx, s, primaries, a.Port, dial)
	} else {
		c, err = dialParallel(ctx, s, primaries, fallbacks, a.Port, dial, drop)
	}
	if err == nil {
		s.metrics.dialDone(time.Since(start))
	}
	return c, err
}

// dialFunc dials one address for s: a bare socket's descriptor or a
// *net.TCPConn. A function of its own, not a closure, so that passing one
// allocates nothing.
type dialFunc[C any] func(context.Context, *server, netip.AddrPort) (C, error)

// dialSerial dials ips in turn, as net.Dialer's serial dial does.
func dialSerial[C any](ctx context.Context, s *server, ips []netip.Addr, port uint16, dial dialFunc[C]) (C, error) {
	var (
		none  C
		first error
	)
	for i, ip := range ips {
		if err := ctx.Err(); err != nil {
			if first == nil {
				first = err
			}
			break
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			if part := partialDeadline(time.Now(), dl, len(ips)-i); part.Before(dl) {
				actx, cancel = context.WithDeadline(ctx, part)
			}
		}
		c, err := dial(actx, s, netip.AddrPortFrom(ip.Unmap(), port))
		cancel()
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return none, first
}

// partialDeadline is net.Dialer's share of the time to deadline for one of
// n addresses still to dial: an equal share, but at least 2 s.
func partialDeadline(now, deadline time.Time, n int) time.Time {
	left := deadline.Sub(now)
	share := left / time.Duration(n)
	if share < 2*time.Second {
		share = min(2*time.Second, left)
	}
	return now.Add(share)
}

// dialParallel races the serial dials of primaries and, s.fallbackDelay
// later or once they failed, of fallbacks; the winner's connection is
// returned and the loser's dropped. Both failing gives the primaries'
// error, as net.Dialer does.
func dialParallel[C any](ctx context.Context, s *server, primaries, fallbacks []netip.Addr, port uint16, dial dialFunc[C], drop func(C)) (C, error) {
	type result struct {
		c       C
		err     error
		primary bool
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2) // never blocks a dial that lost
	race := func(ips []netip.Addr, primary bool) {
		go func() {
			c, err := dialSerial(ctx, s, ips, port, dial)
			results <- result{c, err, primary}
		}()
	}
	race(primaries, true)
	fallback := time.NewTimer(s.fallbackDelay)
	defer fallback.Stop()
	pending, fellBack := 1, false
	startFallback := func() {
		if !fellBack {
			fellBack = true
			pending++
			race(fallbacks, false)
		}
	}
	var primaryErr error
	for {
		select {
		case <-fallback.C:
			startFallback()
		case r := <-results:
			pending--
			if r.err == nil {
				if pending > 0 {
					go func() { // the other dial, canceled: drop its connection should it have won too
						if r := <-results; r.err == nil {
							drop(r.c)
						}
					}()
				}
				return r.c, nil
			}
			if r.primary {
				primaryErr = r.err
				startFallback() // at once, if the timer has not yet
			}
			if pending == 0 { // both reported
				var none C
				return none, primaryErr
			}
		}
	}
}

// dial connects to a, an address, with the tuned dialer. A name never
// comes here: resolved by dialName, its addresses come one at a time.
func (s *server) dial(ctx context.Context, a handshake.Addr) (*net.TCPConn, error) {
	var buf [300]byte
	addr := string(a.AppendTo(buf[:0]))
	c, err := s.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		s.fdPressure(err)
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if err := s.tune.ApplyUpstream(tc); err != nil {
		s.log.Debug("upstream socket options", "target", addr, "err", err)
	}
	return tc, nil
}

// localAddrPort is the upstream socket's own address, sent as BND in the
// success reply.
func localAddrPort(c *net.TCPConn) netip.AddrPort {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
