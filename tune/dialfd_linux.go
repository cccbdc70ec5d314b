package tune

import (
	"context"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// DialFd connects a new TCP socket to addr with every option Dialer and
// ApplyUpstream set (o.Upstream's, SourceAddr, Interface, FastOpenConnect,
// TCP_NODELAY unless Nagle), without package net, and returns its
// descriptor: non-blocking, close-on-exec, owned by the caller.
//
// A connect that completes within the system call, as on loopback (the
// kernel runs the whole three-way handshake before connect returns), costs
// no poller at all: a second connect tells established, pending and refused
// apart. Only a pending one waits, through the runtime poller, bounded by
// o.DialTimeout and ctx. Per connection that saves Dialer's poller
// registration and removal, getpeername and its allocations. Its calls on
// the new socket, socket(2) aside, go through package rawsys: none can
// block, and a connect on loopback lasts long enough for sysmon to hand the
// P to another thread were it made through entersyscall.
//
// Errors wrap the kernel's errno (ECONNREFUSED, ENETUNREACH, ...) in an
// *os.SyscallError, or are os.ErrDeadlineExceeded and ctx's error.
func (o *Options) DialFd(ctx context.Context, addr netip.AddrPort) (int, error) {
	return o.DialFdYield(ctx, addr, nil)
}

// DialFdYield is DialFd that calls yield, when it is not nil, once before it
// waits for a connect still in progress, and never when the connect
// completes within the system call (as on loopback). A caller that runs
// other work on the same goroutine, such as an accept loop serving its
// sessions inline, hands that work on there, so that no dial keeps it
// waiting. yield gets abort, which ends that wait from any goroutine, at
// any time until DialFdYield returns: the dial then fails with ErrAborted
// (called later, abort does nothing). A relay watching its client hands
// abort to the watch, so that a client that leaves ends its dial, and no
// context need be made for a dial that never waits.
func (o *Options) DialFdYield(ctx context.Context, addr netip.AddrPort, yield func(abort func())) (int, error) {
	return o.dialFd(ctx, addr, yield, false)
}

// DialFdLate is DialFdYield without the upstream's TCP keepalive: the caller
// sets it with ArmKeepAlive once the connection has lived long enough to
// need it. Keepalive is four system calls (SO_KEEPALIVE, TCP_KEEPIDLE,
// TCP_KEEPINTVL, TCP_KEEPCNT), and its first probe comes after an idle time
// of seconds, so a connection that ends within a second never needs them.
func (o *Options) DialFdLate(ctx context.Context, addr netip.AddrPort, yield func(abort func())) (int, error) {
	return o.dialFd(ctx, addr, yield, true)
}

// ArmKeepAlive sets the upstream's TCP keepalive options on fd, as DialFd
// would have before connect; nothing when keepalive is off.
func (o *Options) ArmKeepAlive(fd int) error {
	return o.apply(fd, keepAliveOpts, &o.Upstream, true, false)
}

func (o *Options) dialFd(ctx context.Context, addr netip.AddrPort, yield func(abort func()), late bool) (int, error) {
	var deadline time.Time
	if d := o.dialTimeout(); d > 0 {
		deadline = time.Now().Add(d)
	}
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	ip := addr.Addr()
	if src := o.SourceAddr; src.IsValid() && src.Unmap().Is4() != ip.Unmap().Is4() {
		return -1, os.NewSyscallError("connect", unix.EAFNOSUPPORT) // as net.Dialer: no address of the family
	}
	family := unix.AF_INET6
	if ip.Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := o.beforeConnect(fd, late); err != nil {
		rawsys.Close(fd)
		return -1, err
	}
	err = rawsys.Connect(fd, addr)
	if err == unix.EINPROGRESS || err == unix.EINTR {
		// Done by now on loopback: 0 or EISCONN when established,
		// EALREADY while the handshake is still out, the socket's error
		// when it failed.
		err = rawsys.Connect(fd, addr)
		if err == unix.EALREADY || err == unix.EINPROGRESS || err == unix.EINTR {
			fd, err = waitConnect(ctx, fd, addr, deadline, yield)
			if err != nil {
				return -1, err
			}
		} else if !deadline.IsZero() && time.Now().After(deadline) {
			// As net.Dialer: an outcome past the timeout is a timeout.
			rawsys.Close(fd)
			return -1, os.ErrDeadlineExceeded
		}
	}
	if err != nil && err != unix.EISCONN {
		rawsys.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	if o.Upstream.QuickAck {
		if err := setOpt(fd, optQuickAck, o, &o.Upstream); err != nil {
			rawsys.Close(fd)
			return -1, o.optError(optQuickAck, true, err)
		}
	}
	return fd, nil
}

// beforeConnect sets on a new upstream socket what Dialer's Control and
// package net would: o.Upstream's socket options, fast open, the device, the
// source address (bound without a port, so that connect still picks it by
// the whole 4-tuple) and TCP_NODELAY. late leaves keepalive out.
func (o *Options) beforeConnect(fd int, late bool) error {
	sockOpts := dialSockOpts
	if late {
		sockOpts = dialSockOptsLate
	}
	if err := o.apply(fd, sockOpts, &o.Upstream, true, false); err != nil {
		return err
	}
	if err := o.apply(fd, dialOpts, &o.Upstream, true, false); err != nil {
		return err
	}
	if o.SourceAddr.IsValid() {
		bindNoPort(fd)
		if err := bindAddr(fd, o.SourceAddr); err != nil {
			return o.optError(optSourceAddr, true, err)
		}
	}
	if !o.Upstream.Nagle {
		return setNoDelay(fd)
	}
	return nil
}

// waitConnect waits through the runtime poller for fd's pending connect to
// addr, until deadline (none when zero), ctx ends or the abort handed to
// yield (called first, when not nil) is called, and returns the descriptor
// to use from then on (a duplicate: the poller's file is closed) with the
// connect's outcome as a second connect reports it. fd is closed on error.
func waitConnect(ctx context.Context, fd int, addr netip.AddrPort, deadline time.Time, yield func(abort func())) (int, error) {
	f := os.NewFile(uintptr(fd), "upstream") // non-blocking: registered with the poller
	defer f.Close()
	if !deadline.IsZero() {
		f.SetWriteDeadline(deadline)
	}
	// A deadline in the past wakes the wait; once f is closed it does
	// nothing.
	wake := func() { f.SetWriteDeadline(time.Unix(1, 0)) }
	var aborted atomic.Bool
	if yield != nil {
		yield(func() {
			aborted.Store(true)
			wake()
		})
	}
	stop := context.AfterFunc(ctx, wake)
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cerr error
	werr := rc.Write(func(s uintptr) bool {
		cerr = rawsys.Connect(int(s), addr)
		return cerr != unix.EALREADY && cerr != unix.EINPROGRESS && cerr != unix.EINTR
	})
	switch {
	case werr != nil && ctx.Err() != nil:
		return -1, ctx.Err()
	case werr != nil && aborted.Load():
		return -1, ErrAborted
	case werr != nil:
		return -1, werr // os.ErrDeadlineExceeded
	case cerr != nil && cerr != unix.EISCONN:
		return -1, os.NewSyscallError("connect", cerr)
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}
