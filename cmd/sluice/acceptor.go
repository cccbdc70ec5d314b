package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/tune"
)

// acceptor is one listener's accept loop. Exactly one goroutine runs the
// loop at a time.
//
// With bare client sockets (and no --pin) the loop serves each session
// inline, on its own goroutine, for as long as nothing has to wait: with
// --defer-accept a pipelining client's greeting and request are in the
// socket at accept, a CONNECT to an address on a near target completes
// within connect(2), and the success reply and the hand-over to the relay's
// event loops do not block, so such a session costs no goroutine, no
// scheduling and no stack growth of its own. The moment a session would
// wait (a read or write that would block, a connect still in progress, a
// name to resolve, BIND, UDP ASSOCIATE, an access log line, which blocks on a
// stderr nobody drains), its goroutine hands the loop on to
// a new goroutine (leader.handOn) and stays with the session, as before:
// the leader/follower pattern. Only those sessions pay for a goroutine.
//
// A hand-on costs more than the goroutine a session used to start with: the
// new leader's stack grows again through accept, handshake and dial (stack
// growth was 5 % of the relay's samples under clients that wait for each
// answer, against none). Where sessions hand on (such clients; targets
// beyond loopback, whose connects are always still in progress), inlining
// backs off: after a hand-on the next inlineRetry-1 sessions start on their
// own goroutine at once, as before, and the one after tries inline again.
type acceptor struct {
	s        *server
	ctx      context.Context
	l        *net.TCPListener
	closed   <-chan struct{} // closed once shutdown has closed l: ends a backoff
	bare     *bareAccept     // bare accepts through the listener's duplicate; nil: package net's
	cpu      int             // pin the loop's thread to this CPU; -1: no pinning
	accepted *atomic.Int64   // one per accepted connection
	running  *sync.WaitGroup // holds one count for whichever goroutine runs the loop
	inlined  atomic.Int64    // sessions served inline to the hand-over to the relay, or to their end
	handOns  atomic.Int64    // sessions that handed the loop on (each to a new goroutine)
	spawned  atomic.Int64    // sessions started on a goroutine of their own

	// backoff counts the sessions still to start on their own goroutine
	// after a hand-on. Only the leader touches it: handOn sets it before
	// the go statement that makes the next leader.
	backoff int
}

// inlineRetry: after a session handed the accept loop on, one in
// inlineRetry sessions tries inline again.
const inlineRetry = 16

// leader is one goroutine's hold on an acceptor's loop. A session served
// inline carries it (client.lead) until its goroutine hands the loop on.
type leader struct {
	a        *acceptor
	handedOn bool
}

// handOn passes the accept loop to a new goroutine, once: this goroutine
// then follows its session to the end and returns. The new goroutine's
// count on a.running is taken before this one's is given back, so shutdown
// never sees the loop stopped while it runs.
func (ld *leader) handOn() {
	if ld.handedOn {
		return
	}
	ld.handedOn = true
	a := ld.a
	a.handOns.Add(1)
	a.backoff = inlineRetry - 1
	a.running.Add(1)
	go a.acceptLoop()
	a.running.Done()
}

// inline reports whether the loop serves its sessions on its own goroutine.
// A pinned loop does not: its locked thread must not follow a session.
func (a *acceptor) inline() bool {
	return a.bare != nil && a.cpu < 0
}

// acceptLoop accepts connections until the listener is closed, or until a
// session it serves inline hands the loop on. Accept errors such as EMFILE
// never end it: it backs off (5 ms doubling to 1 s) and logs at most once a
// second, so a full fd table neither kills the server nor spins a CPU.
// Client rules and session limits are applied here, before any byte is
// read; a refused client is closed at once.
func (a *acceptor) acceptLoop() {
	s := a.s
	ld := &leader{a: a}
	defer func() {
		if !ld.handedOn {
			a.running.Done()
		}
	}()
	if a.cpu >= 0 {
		if err := tune.PinThread(a.cpu); err != nil {
			s.log.Warn("cannot pin accept loop", "listener", a.l.Addr().String(), "cpu", a.cpu, "err", err)
		}
	}
	inline := a.inline()
	var delay time.Duration
	for {
		c, err := s.accept(a.l, a.bare)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || listenerClosed(a.l) {
				return // closed by shutdown: l first, then bare
			}
			s.metrics.acceptError()
			s.fdPressure(err)
			delay = min(max(2*delay, s.backoffMin), s.backoffMax)
			if s.acceptLogDue() {
				s.log.Error("accept failed; backing off", "listener", a.l.Addr().String(), "err", err, "backoff", delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-a.closed: // shutdown waits for this loop: it must not wait out the delay
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		a.accepted.Add(1)
		s.metrics.accepted()
		lv := s.live.Load()
		// Every client's IP, for the client rules and for the limiter,
		// which counts it even while no per-IP limit is set.
		ip := c.peer.Addr().Unmap().WithZone("") // package net's has a zone, a bare socket's none: one key per client
		if !lv.clients.allowed(0, nil, ip, 0) {
			s.refuse(c, lv, refClientRule)
			continue
		}
		r, perIP := s.limits.admit(ip, lv.maxSessions, lv.maxPerIP)
		if r != admitted {
			s.refuse(c, lv, r)
			continue
		}
		s.sessions.Add(1)
		if !inline || c.tc != nil || a.backoff > 0 {
			a.backoff = max(a.backoff-1, 0)
			a.spawned.Add(1)
			go s.serveConn(a.ctx, c, lv, ip, perIP)
			continue
		}
		c.lead = ld
		s.serveConn(a.ctx, c, lv, ip, perIP)
		if ld.handedOn {
			return // the loop goes on in the goroutine handOn started
		}
		a.inlined.Add(1)
	}
}

// listenerClosed reports whether l was closed.
func listenerClosed(l *net.TCPListener) bool {
	rc, err := l.SyscallConn()
	if err == nil {
		err = rc.Control(func(uintptr) {})
	}
	return errors.Is(err, net.ErrClosed)
}

// accept takes the next connection of l: bare through b when it is set,
// else through package net.
func (s *server) accept(l *net.TCPListener, b *bareAccept) (*client, error) {
	if b != nil {
		c, err := b.accept()
		if c != nil {
			c.w = s.waiter
		}
		return c, err
	}
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	return netClient(c), nil
}

// bareAccept accepts one listener's clients as bare, non-blocking,
// close-on-exec descriptors, waiting through the runtime poller while none
// is queued. Package net's accept would also register the socket with the
// poller, read its local address, set TCP_NODELAY (which the socket
// inherits from its listener here) and allocate a netFD with a finalizer:
// five system calls per connection with the takeover at the end. Only the
// goroutine that runs its acceptor's loop uses it.
type bareAccept struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // b.try, bound once
	nfd  int
	peer netip.AddrPort
	err  error
}

// newBareAccept accepts through rc, a listener's RawConn, or returns nil
// when rc is nil.
func newBareAccept(rc syscall.RawConn) *bareAccept {
	if rc == nil {
		return nil
	}
	b := &bareAccept{rc: rc}
	b.fn = b.try
	return b
}

// accept returns the next client.
func (b *bareAccept) accept() (*client, error) {
	if err := b.rc.Read(b.fn); err != nil {
		return nil, err
	}
	if b.err != nil {
		return nil, os.NewSyscallError("accept4", b.err)
	}
	return &client{fd: b.nfd, peer: b.peer}, nil
}
