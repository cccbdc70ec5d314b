package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/handshake"
	"sluice/relay"
	"sluice/tune"
)

// server holds what every session needs. Its fields are set once by start;
// what a reload may change lives in live, loaded once per session.
type server struct {
	tune        *tune.Options
	dialer      *net.Dialer
	relay       *relay.Relay
	log         *slog.Logger
	live        liveConfig
	limits      *limiter
	metrics     *metrics // nil: no --metrics
	forceCopy   bool     // --no-splice, so a copy is not a fallback
	bareSockets bool     // clients accepted (bareAccept) and CONNECTs to an address dialled (tune.DialFd) outside package net, for relay.StartFds
	waiter      *waiter  // where bare clients wait to be readable, and what watches pending dials' clients; nil: in package os's poller, unwatched
	dialTimeout time.Duration
	// fallbackDelay: a name's other address family is dialled this long
	// after the first (defaultFallbackDelay), or once the first failed.
	fallbackDelay time.Duration
	sessions      sync.WaitGroup
	// logBlocks: a log line may block (a logger that does not write
	// through a logWriter, as in tests), so none is written on an accept
	// loop or an event loop, and refused clients' lines go through
	// refusals, which is nil otherwise.
	logBlocks bool
	refusals  *refusals

	// backoffMin and backoffMax bound an accept loop's back-off after a
	// failed accept: the first waits backoffMin, each next one twice the
	// last, up to backoffMax.
	backoffMin, backoffMax time.Duration
	// started is when start made the server, with its monotonic reading:
	// the origin of lastAcceptLog.
	started       time.Time
	lastAcceptLog atomic.Int64 // nanoseconds since started of the last accept-failure line (at least 1); 0: none yet

	// connected, when set (tests only), runs after a CONNECT's dial
	// succeeded and before its success reply.
	connected atomic.Pointer[func()]
	// handOverErr, when set (tests only), is the error startRelay fails
	// with, as when the relay cannot take a session (EMFILE).
	handOverErr atomic.Pointer[error]
}

// applyClient sets the client options its listener did not pass on.
func (s *server) applyClient(c *client) error {
	if c.tc != nil {
		return s.tune.ApplyClient(c.tc)
	}
	return s.tune.ApplyClientFd(c.fd)
}

// fdPressure gives back the relay's idle pooled pipes when err says the
// process is out of file descriptors, so that they do not keep new
// connections out.
func (s *server) fdPressure(err error) {
	if outOfFds(err) {
		s.relay.Trim()
	}
}

// outOfFds reports whether err says the process or the system is out of
// file descriptors.
func outOfFds(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// acceptLogDue reports whether an accept failure may be logged now: at most
// once a second over all accept loops. It reads the monotonic clock, so a
// step of the wall clock neither silences the lines nor lets them flood.
func (s *server) acceptLogDue() bool {
	now := max(int64(time.Since(s.started)), 1) // 0 is "none yet"
	last := s.lastAcceptLog.Load()
	return (last == 0 || now-last >= int64(time.Second)) && s.lastAcceptLog.CompareAndSwap(last, now)
}

// refuse closes a client refused at accept, counts it and logs it, through
// the refusals queue where a log line may block: it runs on an accept loop,
// which must not wait on the log.
func (s *server) refuse(c *client, lv *live, r refusal) {
	s.metrics.refuse(r)
	switch {
	case !lv.accessLog:
	case s.logBlocks:
		s.refusals.add(c.peer, r)
	default:
		logRefused(s.log, c.peer, r, true)
	}
	c.Close()
}

// errUserLimit refuses a request of a user already at --max-sessions-per-user;
// it maps to reply 0x01.
var errUserLimit = errors.New("limits: too many sessions for this user")

// errAuthRequired refuses a request negotiated without authentication when
// a reload has made it mandatory since the greeting; it maps to reply 0x01.
var errAuthRequired = errors.New("auth: a reload made authentication mandatory since the greeting")

// serveConn runs one session: handshake, policy, dial, reply, relay. It owns
// c and, once dialled, the upstream conn, and closes both. lv is the live
// configuration at accept, used to the session's end; ip and perIP are what
// the limiter needs back. It runs on a goroutine of its own, or inline on
// its accept loop's (c.lead set), which it hands on (c.handOn) before
// anything that may wait.
func (s *server) serveConn(ctx context.Context, c *client, lv *live, ip netip.Addr, perIP bool) {
	rs := &c.sess
	*rs = relaySession{s: s, c: c, lv: lv, ip: ip, perIP: perIP}
	defer func() {
		if !rs.relaying { // not handed to the relay: end here
			s.endSession(rs)
		}
	}()
	start := time.Now()
	rs.start = start
	if err := s.applyClient(c); err != nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.logOffLoop(c)
		s.log.Debug("client socket options", "client", c.addr(), "err", err)
	}
	if lv.handshakeTimeout > 0 {
		c.SetDeadline(start.Add(lv.handshakeTimeout))
	}
	// The drain's end waits neither for a stalled handshake nor for its
	// deadline: a bare client waits in the waiter, which the shutdown
	// closes; any other (package net's, or bare without a waiter) has its
	// wait ended by ctx (endOnCancel; nil for the first). What follows the
	// handshake ends with ctx itself.
	stop := c.endOnCancel(ctx)
	// The greeting chooses the method by lv, but who may use the relay is
	// decided by the configuration in force when it is checked: names and
	// passwords against the users then (s.live), and a request negotiated
	// without authentication is refused if a reload has made it mandatory
	// since.
	hs := lv.hs
	if hs.Credentials != nil {
		hs.Credentials = &s.live
	}
	b := handshake.GetBuffer()
	req, err := handshake.Negotiate(c, b, &hs)
	if stop != nil {
		stop()
	}
	if lv.handshakeTimeout > 0 {
		c.SetDeadline(time.Time{}) // the dial has its own timeout
	}
	if err == nil && req.User == nil && s.live.Load().hs.Credentials != nil {
		err = errAuthRequired
	}
	if err != nil {
		// A request refused with a reply was read, its command with it
		// (an unknown one is cmdLabelUnknown); anything else ended before
		// one, or on one too broken to answer. The log says what is
		// known of it: the name a failed login tried, and the target of
		// a request refused whole.
		rep, cmd := replyNone, cmdLabelHandshake
		var target dest
		if errors.Is(err, handshake.ErrAddrTypeNotSupported) || errors.Is(err, handshake.ErrCommandNotSupported) || errors.Is(err, errAuthRequired) {
			rep, cmd = int(handshake.ReplyFor(err)), cmdLabelOf(req.Cmd)
			if !errors.Is(err, handshake.ErrAddrTypeNotSupported) {
				target = newDest(req.Addr)
			}
		}
		user := string(req.User)
		b.Release()
		s.releaseLimits(rs) // before the reply: a client may retry as soon as it reads it
		if s.reject(c, &req, err) != nil {
			rep = replyNone // not sent: the client is gone
		}
		s.metrics.endEarly(cmd, rep)
		s.accessLog(lv, c, user, cmdLabels[cmd], target, rep, 0, 0, start, err)
		return
	}
	s.metrics.handshakeDone(time.Since(start))
	rs.user, rs.cmd, rs.target = string(req.User), cmdLabelOf(req.Cmd), newDest(req.Addr)
	s.metrics.begin(rs.cmd)
	if req.User != nil { // counted with no limit too, for a limit a reload sets later
		if !s.limits.admitUser(rs.user, lv.maxPerUser) {
			b.Release()
			s.metrics.refuse(refMaxPerUser)
			s.fail(rs, &req, errUserLimit)
			return
		}
		rs.userHeld = true
	}
	s.serveRequest(ctx, rs, &req, b)
}

// serveRequest carries out the request a client negotiated: CONNECT, BIND or
// UDP ASSOCIATE, up to the relay or the failure reply. b, which req aliases,
// is released here.
func (s *server) serveRequest(ctx context.Context, rs *relaySession, req *handshake.Request, b *handshake.Buffer) {
	lv, c := rs.lv, rs.c
	var up *net.TCPConn
	var err error
	switch req.Cmd {
	case handshake.CmdConnect:
		var fd int
		c.sent = len(req.Rest) > 0 // a client that half-closes after them is not leaving
		up, fd, err = s.connect(ctx, lv, c, req.Addr)
		if h := s.connected.Load(); h != nil && err == nil {
			(*h)()
		}
		if err == nil && fd >= 0 {
			s.relayFd(ctx, rs, req, b, fd)
			return
		}
		if err == nil {
			err = req.WriteReply(c, handshake.Succeeded, localAddrPort(up))
			if err != nil {
				err = errReplied{err}
			}
			rs.replied = err == nil
		}
	case handshake.CmdBind:
		up, err = s.bindRequest(ctx, lv, c, req)
		rs.replied = err == nil // its second reply, 0x00, is out
	case handshake.CmdUDPAssociate:
		if lv.udpIdleTimeout < 0 {
			err = handshake.ErrCommandNotSupported
			break
		}
		c.handOn() // the association holds this goroutine for its life
		if req.Addr.Type == handshake.AddrDomain {
			req.Addr.Name = nil // aliases b, released before the association ends
		}
		var tc *net.TCPConn
		if tc, err = c.conn(); err != nil {
			break
		}
		b.Release()
		s.udpSession(ctx, rs, tc, req)
		return
	default:
		err = handshake.ErrCommandNotSupported
	}
	if err == nil && len(req.Rest) > 0 {
		// Bytes the client pipelined after its request go first, in order.
		if _, err = up.Write(req.Rest); err != nil {
			err = errReplied{err} // the success reply is out: no other reply now
		}
		rs.ahead = len(req.Rest)
		if err == nil {
			s.metrics.pipelined(rs.ahead)
		}
	}
	b.Release() // req aliases b: not used past here
	if err != nil {
		if up != nil {
			up.Close()
		}
		s.fail(rs, req, err)
		return
	}
	s.startRelay(ctx, rs, up, -1)
}

// bindRequest serves a BIND (bind), unless --bind=false turned it off.
func (s *server) bindRequest(ctx context.Context, lv *live, c *client, req *handshake.Request) (*net.TCPConn, error) {
	if lv.bindTimeout < 0 {
		return nil, handshake.ErrCommandNotSupported
	}
	c.handOn() // BIND waits for the second connection
	tc, err := c.conn()
	if err != nil {
		return nil, err
	}
	return s.bind(ctx, lv, tc, req)
}

// relayFd ends the handshake of a CONNECT whose upstream is a bare
// descriptor (tune.DialFd) and hands the session to the relay, which owns
// fd from then on: success reply, the bytes the client pipelined after its
// request, startRelay. b is released here.
func (s *server) relayFd(ctx context.Context, rs *relaySession, req *handshake.Request, b *handshake.Buffer, fd int) {
	err := req.WriteReply(rs.c, handshake.Succeeded, fdLocalAddrPort(fd))
	rs.replied = err == nil
	if err == nil && len(req.Rest) > 0 {
		err = writeFd(fd, req.Rest)
		rs.ahead = len(req.Rest)
		if err == nil {
			s.metrics.pipelined(rs.ahead)
		}
	}
	b.Release() // req aliases b: not used past here
	if err != nil {
		sysClose(fd)
		s.fail(rs, req, errReplied{err})
		return
	}
	s.startRelay(ctx, rs, nil, fd)
}

// startRelay hands an established session to the relay, which owns it from
// then on, until relayDone: its upstream is up, or the bare descriptor upFd
// when up is nil. A bare client goes to relay.StartFds with a bare upstream
// (on an event loop neither socket meets package net) and to
// relay.StartFdConn with a dialled one; a *net.TCPConn client goes to
// relay.Start, with a bare upstream wrapped first.
func (s *server) startRelay(ctx context.Context, rs *relaySession, up *net.TCPConn, upFd int) {
	var err error
	if p := s.handOverErr.Load(); p != nil {
		err = *p
		if up != nil {
			up.Close()
		} else {
			sysClose(upFd)
		}
	} else if rs.c.tc == nil {
		var cfd int
		if cfd, err = rs.c.takeFd(); err == nil {
			rs.up, rs.relaying = up, true
			rs.c.lead = nil // the relay's from here: its goroutines never hand the accept loop on
			// On Linux the relay's event loops carry the session from
			// here, without a goroutine: this one returns (to its accept
			// loop when it served the session inline), and the stack it
			// grew through the handshake and the dial is the session's
			// no longer.
			if up != nil {
				s.relay.StartFdConn(ctx, cfd, up, rs.Ended)
			} else {
				s.relay.StartFdsIn(ctx, &rs.rel, cfd, upFd, rs) // nothing to allocate
			}
			return
		}
		if up != nil { // no path dials through package net for a bare client today
			up.Close()
		} else {
			sysClose(upFd)
		}
	} else {
		if up == nil {
			s.tune.ArmKeepAlive(upFd) // DialFdLate's: the goroutine path has no Mature
			up, err = relay.FileConn(upFd)
		}
		if err == nil {
			rs.up, rs.relaying = up, true
			s.relay.Start(ctx, rs.c.tc, up, rs.Ended)
			return
		}
	}
	s.fdPressure(err) // a duplicate needs a descriptor
	if s.logBlocks {
		rs.c.handOn()
	}
	s.log.Warn("cannot hand a session to the relay", "client", rs.c.addr(), "err", err)
	// The client has its success reply (a CONNECT's, a BIND's second), and
	// the target any bytes it pipelined: the session ends with that reply,
	// as one that fails in the relay does (relayed), and a reset.
	rs.c.resetOnClose()
	s.metrics.end(rs.cmd, int(handshake.Succeeded))
	s.accessLog(rs.lv, rs.c, rs.user, cmdLabels[rs.cmd], rs.target, int(handshake.Succeeded), int64(rs.ahead), 0, rs.start, err)
}

// Ended is the relay's done for rs (a relay.Ender).
func (rs *relaySession) Ended(st relay.Stats, err error) {
	// At once, whatever the access log does: the relay left the
	// session's last FIN to this close (relay.Options.CallerCloses),
	// unless it took the sockets over and closed them already
	// (TakeSockets), when this close does nothing.
	rs.closeSockets()
	if rs.lv.accessLog && rs.s.logBlocks {
		// The access log line can block: write it off the loop,
		// which serves other sessions.
		go rs.s.relayed(rs, st, err)
		return
	}
	rs.s.relayed(rs, st, err)
}

// dest is a session's target as its log lines write it, formatted only when
// one is written: an address as the request gave it, a name copied out of
// the handshake's buffer. The zero dest is written as "".
type dest struct {
	addr handshake.Addr
}

func newDest(a handshake.Addr) dest {
	if a.Name != nil {
		a.Name = bytes.Clone(a.Name)
	}
	return dest{a}
}

func (d dest) String() string {
	if d.addr.Type == 0 {
		return ""
	}
	return d.addr.String()
}

// writeFd writes all of p to a fresh upstream socket's descriptor. Its
// send buffer is empty, far larger than the few bytes a client pipelines
// behind its request: EAGAIN cannot happen and is an error.
func writeFd(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := sysWrite(fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		p = p[n:]
	}
	return nil
}

// relaySession is an established session as serveConn hands it to the
// relay, which owns it from then on and ends it through relayed.
type relaySession struct {
	rel         relay.Session // the relay's state for it, in this allocation (StartFdsIn)
	s           *server
	c           *client
	up          *net.TCPConn // nil: none, or a bare descriptor the relay owns
	lv          *live
	ip          netip.Addr
	perIP       bool
	userHeld    bool // a --max-sessions-per-user slot of user is held
	ahead       int  // bytes the client pipelined behind its request, written upstream before the relay started
	user        string
	cmd         int
	target      dest
	start       time.Time
	relaying    bool // handed to the relay, which ends it through relayed
	closed      bool // closeSockets ran
	replied     bool // a CONNECT's success reply (a BIND's second) went out: the reply it ends with, whatever fails after it
	limitsFreed bool // releaseLimits ran
}

// relayed accounts for a session the relay ended and releases what it holds:
// it closes two sockets, counts, and writes the access log line. Without an
// access log, or with a log that never blocks (logBlocks false), it runs on the
// relay's event loop, and nothing in it blocks.
func (s *server) relayed(rs *relaySession, st relay.Stats, err error) {
	defer s.endSession(rs)
	st.ClientToUpstream += int64(rs.ahead) // the client's bytes, though not the relay's
	s.metrics.relayed(st, s.forceCopy)
	s.metrics.end(rs.cmd, int(handshake.Succeeded))
	s.accessLog(rs.lv, rs.c, rs.user, cmdLabels[rs.cmd], rs.target, int(handshake.Succeeded), st.ClientToUpstream, st.UpstreamToClient, rs.start, err)
}

// closeSockets closes a session's sockets; a second call does nothing.
func (rs *relaySession) closeSockets() {
	if rs.closed {
		return
	}
	rs.closed = true
	if rs.up != nil {
		rs.up.Close()
	}
	rs.c.Close()
}

// endSession closes a session's sockets and gives back its limit slots.
func (s *server) endSession(rs *relaySession) {
	rs.closeSockets()
	s.releaseLimits(rs)
	s.sessions.Done()
}

// releaseLimits gives back the session's places under the limits, once:
// at its end, or before a failure reply, after which the client may well
// connect again at once (and must not be refused for its own last session).
func (s *server) releaseLimits(rs *relaySession) {
	if rs.limitsFreed {
		return
	}
	rs.limitsFreed = true
	if rs.userHeld {
		s.limits.releaseUser(rs.user)
	}
	s.limits.release(rs.ip, rs.perIP)
}

// udpSession runs a UDP association and accounts for it.
func (s *server) udpSession(ctx context.Context, rs *relaySession, tc *net.TCPConn, req *handshake.Request) {
	lv, c, user, target, start := rs.lv, rs.c, rs.user, rs.target, rs.start
	st, denied, err := s.associate(ctx, lv, tc, c.peer, req)
	if err != nil && (!errors.As(err, new(errReplied)) || errors.As(err, new(errReplyUnsent))) {
		s.fail(rs, req, err) // an errReplied: counted and logged as reply none
		return
	}
	s.metrics.end(cmdLabelUDP, int(handshake.Succeeded))
	s.udpLog(lv, c, user, target, st, denied, start, err)
}

func sumDrops(st relay.DatagramStats) int64 {
	var n int64
	for _, d := range st.Dropped {
		n += d
	}
	return n
}

// fail ends a session that got no success reply, or failed after it
// (errReplied): it replies to req where still possible, counts and logs.
// The reply counted and logged is the one sent: succeeded for a CONNECT
// that failed after its success reply (rs.replied), none where a reply
// could not be sent (not due, or its write failed).
func (s *server) fail(rs *relaySession, req *handshake.Request, err error) {
	lv, c, user, cmd, target, start := rs.lv, rs.c, rs.user, rs.cmd, rs.target, rs.start
	rep := replyNone
	switch {
	case rs.replied:
		rep = int(handshake.Succeeded)
		c.resetOnClose() // the session failed past its success reply
	case !errors.As(err, new(errReplied)):
		s.releaseLimits(rs) // before the reply: a client may retry as soon as it reads it
		werr := s.reject(c, req, err)
		rep = int(handshake.ReplyFor(err))
		if rep == int(handshake.NotAllowed) {
			s.metrics.refuse(refDestRule) // refused, whether or not the client heard it
			if !lv.accessLog {
				s.logOffLoop(c)
				s.log.Info("denied", "client", c.addr(), "user", user, "cmd", cmdLabels[cmd], "target", target.String(), "err", err)
			}
		}
		if werr != nil {
			rep = replyNone // not sent: the client is gone
		}
	}
	s.metrics.end(cmd, rep)
	s.accessLog(lv, c, user, cmdLabels[cmd], target, rep, 0, 0, start, err)
}

// cmdLabelOf maps a request command to its metric label.
func cmdLabelOf(c handshake.Command) int {
	switch c {
	case handshake.CmdConnect:
		return cmdLabelConnect
	case handshake.CmdBind:
		return cmdLabelBind
	case handshake.CmdUDPAssociate:
		return cmdLabelUDP
	}
	return cmdLabelUnknown
}

// reject answers a failed handshake or dial with the reply the RFC asks for
// (or none, where it says close), after any answers Negotiate held back, and
// logs it at debug level. It returns the write's error: a reply it could not
// send is counted and logged as none.
func (s *server) reject(c *client, req *handshake.Request, err error) error {
	werr := req.WriteError(c, err)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.logOffLoop(c)
		s.log.Debug("rejected", "client", c.addr(), "reply", handshake.ReplyFor(err).String(), "err", err, "reply_err", werr)
	}
	return werr
}

// logOffLoop moves c's session off its accept loop (client.handOn) before a
// log line of its own where a line may block (logBlocks: a logger handed to
// the server), as the access log does.
func (s *server) logOffLoop(c *client) {
	if s.logBlocks {
		c.handOn()
	}
}
