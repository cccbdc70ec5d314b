//go:build linux

package relay

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceFlags: SPLICE_F_NONBLOCK makes the pipe side non-blocking (the
// sockets already are), so every wait goes through the runtime poller.
const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// splicer carries one direction's state into the RawConn callbacks. The two
// callbacks are method values made once per direction, so moving bytes
// allocates nothing.
type splicer struct {
	pipes  *pipePool
	h      *half
	p      *pipe // held while bytes are in flight; nil while src is waited on
	n      int   // bytes the last fill moved into p; 0 with err nil is EOF
	marked bool  // the last fill read past an urgent mark (passMark): no splice
	err    error // error of the last callback
	noPipe bool  // err came from making a pipe, not from splice
	calls  int64 // splice(2) calls that moved bytes

	fill, drain func(fd uintptr) bool
}

// spliceHalf moves h.src to h.dst with splice(2) through a pipe taken from the
// pool on demand, then half-closes h.dst on EOF. It returns done == false,
// with nothing lost, when the plain path must take over: the kernel refused
// to splice from h.src before any byte moved, or no pipe could be made.
func (r *Relay) spliceHalf(h *half) (done bool, err error) {
	src, err := h.src.SyscallConn()
	if err != nil {
		return true, err
	}
	dst, err := h.dst.SyscallConn()
	if err != nil {
		return true, err
	}
	if r.refuseSplice != nil && isRefused(r.refuseSplice) {
		h.fallback = true
		return false, nil
	}
	s := &splicer{pipes: r.pipes, h: h}
	s.fill, s.drain = s.fillFrom, s.drainTo
	defer s.finish()

	// Invariant: at the top of each iteration s.p is nil or an empty pipe.
	// fill gives the pipe back whenever src would block, so a direction that
	// waits for data holds no pipe; drain empties it before the next fill.
	for {
		s.n, s.err, s.noPipe, s.marked = 0, nil, false, false
		if err := src.Read(s.fill); err != nil {
			return true, err
		}
		switch {
		case s.noPipe:
			h.fallback = true
			return false, nil
		case s.err != nil && h.bytes == 0 && isRefused(s.err):
			h.fallback = true
			return false, nil
		case s.err != nil:
			return true, os.NewSyscallError("splice", s.err)
		case s.n == 0:
			return true, h.passEOF()
		}
		s.p.data = s.n
		if !s.marked {
			s.calls++
		}
		if err := dst.Write(s.drain); err != nil {
			return true, err
		}
		if s.err != nil {
			return true, os.NewSyscallError("splice", s.err)
		}
	}
}

// finish publishes the call count and gives back the pipe, if one is held:
// the pool closes it when bytes are stuck in it.
func (s *splicer) finish() {
	s.h.spliceCalls += s.calls
	if s.p != nil {
		s.h.dropped = s.p.data > 0
		s.pipes.put(s.p)
		s.p = nil
	}
}

// fillFrom is the src RawConn.Read callback: one splice from the socket into
// an empty pipe, taken from the pool if none is held. Invariant: the pipe is
// empty on entry, so EAGAIN can only mean that the socket has nothing to
// read; the pipe then goes back to the pool and the runtime poller waits.
func (s *splicer) fillFrom(fd uintptr) bool {
	if hook := testHookRead; hook != nil {
		hook(s.h.src)
	}
	if s.p == nil {
		p, err := s.pipes.get()
		if err != nil {
			s.err, s.noPipe = err, true
			return true
		}
		s.p = p
	}
	for {
		n, err := unix.Splice(int(fd), nil, s.p.wfd, nil, s.p.size, spliceFlags)
		if err == nil && n == 0 || err == unix.EAGAIN {
			// Either may be an urgent mark that splice cannot pass.
			// The runtime poller does not report urgent data
			// (EPOLLPRI), and the bytes behind a mark raise no new
			// edge, so each is checked (one ioctl); the event loops
			// check only after EPOLLPRI.
			if m, at, merr := passMark(int(fd), s.p); at {
				if merr == nil {
					s.n, s.marked = m, true // 0: EOF right after the urgent byte
					return true
				}
				n, err = 0, merr
			}
		}
		switch err {
		case nil:
			s.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			s.pipes.put(s.p)
			s.p = nil
			return false
		}
		s.err = err
		return true
	}
}

// drainTo is the dst RawConn.Write callback: splice from the pipe into the
// socket until the pipe is empty. Invariant: the pipe holds s.p.data > 0
// bytes, so EAGAIN can only mean that the socket is full; the runtime poller
// then waits for room (half.stall).
func (s *splicer) drainTo(fd uintptr) bool {
	for s.p.data > 0 {
		n, err := unix.Splice(s.p.rfd, nil, int(fd), nil, s.p.data, spliceFlags)
		if n > 0 {
			s.p.data -= int(n)
			s.calls++
			s.h.spliced = true
			s.h.moved(int(n))
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			s.h.stall()
			return false
		case nil:
			err = io.ErrNoProgress // cannot happen while the pipe holds data
		}
		if hook := testHookTaken; hook != nil {
			hook(s.h.dst) // the splice took dst's error, if one was pending
		}
		s.err = err
		return true
	}
	return true
}

// isRefused reports whether a splice error before any byte moved means that
// the kernel does not splice this socket, so the plain path can take over.
func isRefused(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP)
}
