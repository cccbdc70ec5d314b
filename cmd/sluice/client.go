package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"sluice/relay"
)

// client is a session's client socket. Accepted by package net it is a
// *net.TCPConn (tc). Accepted bare (bareAccept: Linux, with the relay's event
// loops) it is a non-blocking descriptor that meets no poller: reads and
// writes are plain system calls, and only one that would block waits, within
// the deadline, in the server's waiter (w), or without one registers the
// socket with the runtime poller (f) and waits there. A CONNECT then hands the descriptor to the relay as it is
// (takeFd); what needs package net (BIND, UDP ASSOCIATE) gets a
// *net.TCPConn from conn.
type client struct {
	tc       *net.TCPConn // package net's socket; nil while bare
	fd       int          // the bare descriptor; -1 once taken or closed
	f        *os.File     // fd registered with the poller, once a call would block
	peer     netip.AddrPort
	deadline time.Time
	lead     *leader       // the accept loop this session runs on inline; nil: its own goroutine
	sess     relaySession  // the session c serves, in c's allocation (serveConn)
	w        *waiter       // where a bare read or write that would block waits, while f is nil (nil: in f); and what watches a pending dial
	wid      uint64        // the id in w of the session's last wait
	wake     chan struct{} // w's wake-up, from the first wait
	werr     error         // why w woke the session: nil (ready), a deadline, w closed
	waited   bool          // the socket (pollFd) is registered with w
	abort    func()        // ends the pending dial w watches c's leaving for (w.watch); under w.mu
	left     bool          // w aborted the dial: the client left; under w.mu
	sent     bool          // the client pipelined bytes for the target after its request, read already
	netFd    int32         // tc's descriptor, read when w registered it for a watch; valid while waited
}

// netClient is a client accepted by package net.
func netClient(c *net.TCPConn) *client {
	return &client{tc: c, fd: -1, peer: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
}

// addr is the client's address as the logs write it: as accepted (a bare
// socket adopted into package net after its client reset knows no
// RemoteAddr).
func (c *client) addr() string {
	if c.tc != nil && !c.peer.IsValid() {
		return c.tc.RemoteAddr().String()
	}
	return peerString(c.peer)
}

// peerString writes a client's address as the logs show it: an IPv4 client
// of a dual-stack listener without its ::ffff: prefix.
func peerString(p netip.AddrPort) string {
	return netip.AddrPortFrom(p.Addr().Unmap(), p.Port()).String()
}

func (c *client) Read(p []byte) (int, error) {
	if c.tc != nil {
		return c.tc.Read(p)
	}
	if c.f == nil && c.fd >= 0 {
		for {
			n, err := sysRead(c.fd, p)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN && c.w != nil:
				c.handOn() // it waits: not on the accept loop
				if err := c.w.wait(c, false); err != nil {
					return 0, err
				}
				continue
			case err == syscall.EAGAIN:
			case err != nil:
				return 0, os.NewSyscallError("read", err)
			case n == 0 && len(p) > 0:
				return 0, io.EOF
			default:
				return n, nil
			}
			break
		}
	}
	if err := c.poll(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

func (c *client) Write(p []byte) (int, error) {
	if c.tc != nil {
		return c.tc.Write(p)
	}
	written := 0
	for c.f == nil && c.fd >= 0 && written < len(p) {
		n, err := sysWrite(c.fd, p[written:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN && c.w != nil:
			c.handOn() // it waits: not on the accept loop
			if err := c.w.wait(c, true); err != nil {
				return written, err
			}
			continue
		case err == syscall.EAGAIN:
		case err != nil:
			return written, os.NewSyscallError("write", err)
		default:
			written += n
			continue
		}
		break
	}
	if written == len(p) {
		return written, nil
	}
	if err := c.poll(); err != nil {
		return written, err
	}
	n, err := c.f.Write(p[written:])
	return written + n, err
}

// handOn is called before the session does anything that may wait: if it
// runs inline on its accept loop's goroutine, the loop moves to a new one
// (leader.handOn) and this goroutine stays with the session.
func (c *client) handOn() {
	if c.lead != nil {
		c.lead.handOn()
		c.lead = nil
	}
}

// dialing is the yield of a CONNECT's bare dial (tune.DialFdLate), called
// when the connect did not complete at once: the session leaves its accept
// loop (handOn), and the waiter, if any, watches for the client leaving
// meanwhile, to abort the dial (w.watch). dialed ends the watch.
func (c *client) dialing(abort func()) {
	c.handOn()
	if c.watchable() {
		c.w.watch(c, abort)
	}
}

// watchable reports whether the waiter can watch c's socket during a dial:
// there is one, and a socket, bare or package net's.
func (c *client) watchable() bool {
	return c.w != nil && (c.fd >= 0 || c.tc != nil)
}

// pollFd is the descriptor of c's socket as the waiter registers it: the
// bare one, or package net's, read when its watch was registered (netFd).
func (c *client) pollFd() int {
	if c.tc != nil {
		return int(c.netFd)
	}
	return c.fd
}

// dialed ends the watch dialing began and turns err, the dial's outcome,
// into errClientGone when the client left.
func (c *client) dialed(err error) error {
	// c.abort is set and cleared by this goroutine alone (watch,
	// unwatch): a dial that never waited takes no lock here.
	if c.abort != nil && c.w.unwatch(c) && err != nil {
		return errReplied{errClientGone} // nobody to reply to
	}
	return err
}

// poll registers the bare descriptor with the runtime poller, once: from
// then on reads and writes go through c.f and its deadline. The session is
// about to wait, so it leaves its accept loop first (handOn).
func (c *client) poll() error {
	c.handOn()
	if c.f != nil {
		return nil
	}
	if c.fd < 0 {
		return net.ErrClosed
	}
	c.f = os.NewFile(uintptr(c.fd), "client") // non-blocking: pollable
	if !c.deadline.IsZero() {
		c.f.SetDeadline(c.deadline)
	}
	return nil
}

// SetDeadline bounds the reads and writes that have to wait.
func (c *client) SetDeadline(t time.Time) {
	if c.tc != nil {
		c.tc.SetDeadline(t)
		return
	}
	c.deadline = t
	if c.f != nil {
		c.f.SetDeadline(t)
	}
}

// endOnCancel makes every read and write that waits fail once ctx ends, for
// a handshake whose deadline, if any, the drain's end must not wait for,
// and returns the stop function of the context.AfterFunc that does it; nil
// when the waiter takes care of it (a bare client waits in c.w, which the
// server's shutdown closes). A bare client without a waiter would wait in
// its os.File, so it registers with the poller now (c.poll), off its
// accept loop: a cost only for a server whose waiter could not be made.
func (c *client) endOnCancel(ctx context.Context) func() bool {
	past := time.Unix(1, 0)
	switch {
	case c.tc != nil:
		tc := c.tc
		return context.AfterFunc(ctx, func() { tc.SetDeadline(past) })
	case c.w == nil && c.poll() == nil:
		f := c.f
		return context.AfterFunc(ctx, func() { f.SetDeadline(past) })
	}
	return nil
}

// takeFd hands the bare socket over (to the relay): its descriptor, out of
// the poller if it was registered there, owned by the caller from now on.
func (c *client) takeFd() (int, error) {
	if c.tc != nil || c.fd < 0 {
		return -1, errors.New("client: no bare socket")
	}
	fd := c.fd
	if c.waited {
		c.w.forget(c)
	}
	if c.f != nil {
		var err error
		if fd, err = dupCloexec(c.fd); err != nil {
			return -1, err
		}
		c.f.Close()
		c.f = nil
	}
	c.fd = -1
	return fd, nil
}

// conn returns the client as a *net.TCPConn, adopting a bare socket into
// package net (with its options as it inherited them) the first time.
func (c *client) conn() (*net.TCPConn, error) {
	if c.tc != nil {
		return c.tc, nil
	}
	fd, err := c.takeFd()
	if err != nil {
		return nil, err
	}
	if c.tc, err = relay.FileConn(fd); err != nil {
		return nil, err
	}
	if !c.deadline.IsZero() {
		c.tc.SetDeadline(c.deadline)
	}
	return c.tc, nil
}

// resetOnClose has c's close reset the client (SO_LINGER 0): a session
// that failed after its success reply must not end with a FIN, which the
// client would read as a target that answered nothing and closed.
func (c *client) resetOnClose() {
	switch {
	case c.tc != nil:
		c.tc.SetLinger(0)
	case c.fd >= 0:
		sysLingerZero(c.fd)
	}
}

// Close closes the client socket, whichever form it has; later calls do
// nothing.
func (c *client) Close() error {
	switch {
	case c.tc != nil:
		return c.tc.Close()
	case c.f != nil:
		c.fd = -1
		f := c.f
		c.f = nil
		return f.Close()
	case c.fd >= 0:
		fd := c.fd
		c.fd = -1
		return sysClose(fd)
	}
	return nil
}
