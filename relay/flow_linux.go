//go:build linux

package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// budget bounds the splice calls one direction makes in one turn, so that a
// bulk transfer does not starve the other sessions of its loop.
const budget = 16

// The loop's system calls go through package rawsys (RawSyscall), long
// splices excepted: none of them can block (every descriptor is
// non-blocking, splice has SPLICE_F_NONBLOCK, epoll_wait a zero timeout), so
// the runtime's entersyscall and exitsyscall buy nothing, and they cost (the
// package's doc says how).
//
// longSplice: a splice from a pipe holding at least this many bytes into a
// socket, which on loopback runs the receiving socket's TCP work for a full
// segment or more (tens of microseconds, hundreds for a full pipe), goes
// through unix.Splice instead, which tells the runtime, as package net's
// calls do: while it lasts past a sysmon tick, the loop's P goes to another
// thread, and the loop's other sessions and the other loops on that P move
// on instead of waiting for the call to return. Finding a P again on return
// is worth it only for calls that long: with 8 bulk streams, relay capped at
// 40 % of a CPU, 1.09x the throughput at 0.91x the CPU per GiB against
// RawSyscall for every splice; 1 stream and short sessions, whose splices
// stay raw, unchanged (README, --loops).
const longSplice = 64 << 10

// flow is one session in a loop. Its fields are set before it is published
// to the loop under l.mu and owned by the loop goroutine afterwards.
type flow struct {
	id               uint64
	fds              [2]int
	client, upstream *net.TCPConn
	ctx              context.Context
	done             Ender
	watch            *watch          // ends f with ctx; nil when ctx cannot end, or once f is unlinked (guarded by l.mu)
	doneCh           <-chan struct{} // ctx.Done(), watch's key in l.watches

	dirs     [2]flowDir
	readable [2]bool
	probe    [2]bool       // EOF, an error or urgent data reported: read to EAGAIN
	erred    [2]bool       // an error reported (EPOLLERR): one may be pending once reading ends
	finSeen  [2]bool       // the socket's FIN came before any error (an EPOLLRDHUP without EPOLLERR): its stream is whole
	finTold  [2]bool       // an EPOLLRDHUP was dispatched: had urgent data been pending then, its EPOLLPRI came in the same mask
	finReset [2]unix.Errno // the socket failed after its FIN, the error taken (run): the direction ends with it at its EOF
	urgent   [2]bool       // urgent data reported (EPOLLPRI): a splice may stop at its mark (passMark)
	writable [2]bool
	queued   bool // in l.ready
	ended    bool
	last     int64 // l.now when a byte last moved
	born     int64 // l.now when the flow was added
	unripe   bool  // waits for l.mature on its upstream (Options.Mature)

	callerCloses bool    // the last FIN is left to the caller's close (Options.CallerCloses)
	owned        [2]bool // fds[side] is the loop's own, closed by finish (Options.TakeSockets, StartFd)
}

type flowDir struct {
	p        *pipe   // held while bytes are in flight
	buf      *[]byte // the small reads' buffer (loop.bufBytes): held while bytes are in it
	off, n   int32   // the bytes of buf not yet written: (*buf)[off:off+n]; at most MaxCopyBelow
	bytes    int64   // written to the destination
	calls    int64   // splice(2) calls that moved bytes (passMark's read is none)
	copies   int64   // read and write calls of the small reads that moved bytes
	bulk     bool    // the last read was not small: the next one splices
	copyOnly bool    // no splice (refused, or no pipe) while the other direction held bytes: every read is small
	eof      bool    // the source reached EOF
	done     bool    // EOF passed on: the destination is half-closed
}

// errHandOff is returned by step when the session must move to the
// goroutine path: the kernel refused to splice from a direction's source
// before that direction spliced a byte, or no pipe could be made, while
// neither direction holds bytes nor a taken error (canHandOff).
var errHandOff = errors.New("relay: hand off to the plain path")

// run moves what f's sockets allow in both directions and ends f when both
// directions are done or one failed.
func (l *loop) run(f *flow) {
	if f.ended {
		return
	}
	more := false
	for d := range f.dirs {
		m, err := l.step(f, d)
		if err == errHandOff {
			l.handOff(f)
			return
		}
		if err != nil {
			label := dirLabel[d]
			if o, ok := err.(dstFailed); ok {
				label, err = dirLabel[1-d], o.err
			}
			l.fail(f, fmt.Errorf("relay: %s: %w", label, err))
			return
		}
		more = more || m
	}
	if f.dirs[0].done && f.dirs[1].done {
		l.finish(f, nil)
		return
	}
	for d := range f.dirs {
		if f.erred[d] && f.stalled(d) && !f.dirs[d].eof {
			// d's source failed (its EPOLLERR came, now or before)
			// while d holds bytes for a destination that takes none.
			// Reset before its FIN, the peer cut its stream short:
			// the session ends now, its bytes dropped and the far
			// peer reset (fail), as the goroutine path's reset watch
			// does, where waiting to pass them on would hold the
			// session until a silent destination read or closed.
			// Reset after its FIN (EPIPE: the socket was in
			// CLOSE_WAIT; or any error once the FIN was seen, as a
			// reset in LAST_ACK, which answers ECONNRESET), the
			// stream was whole: d passes it on, and the FIN, as for
			// any session whose destination reads slowly, and ends
			// the session with the error at its EOF (finReset). An
			// error taken already, or none, leaves only the flag:
			// clear it.
			err := sockError(f.fds[d])
			f.erred[d] = false
			if errno, ok := err.(unix.Errno); ok && (errno == unix.EPIPE || f.finSeen[d]) {
				f.finReset[d] = errno
			} else if err != nil {
				l.fail(f, fmt.Errorf("relay: %s: %w", dirLabel[d], err))
				return
			}
		}
	}
	if more && !f.queued {
		f.queued = true
		l.ready = append(l.ready, f)
	}
}

var dirLabel = [2]string{"client->upstream", "upstream->client"}

// step moves bytes in direction d (source side d, destination side 1-d)
// until a socket would block, the direction ends, or it spent its budget
// (more is then true). Invariant: a direction holds a pipe only while bytes
// are in it or a splice into it is about to be made, and a buffer only while
// bytes are in it; never both with bytes, so they leave in the order they came.
//
// Which way a read goes: every read splices, unless loop.copyBelow is set;
// then a direction starts with small reads, read(2) into a buffer of
// copyBelow bytes and write(2) out of it, a read that fills the buffer makes
// the next one a splice (bulk), and a splice that brings fewer than
// copyBelow bytes makes the next one small again. A direction that cannot
// splice (refused, or no pipe to be had) while the other holds bytes, which
// a hand-off would drop, reads through a buffer for the rest of the session
// (copyOnly).
func (l *loop) step(f *flow, d int) (more bool, err error) {
	dir := &f.dirs[d]
	src, dst := d, 1-d
	cuts := 0 // reads made again at the mark (markRetries)
	for range budget {
		switch {
		case dir.done:
			return false, nil
		case dir.p != nil && dir.p.data > 0:
			if !f.writable[dst] {
				return false, nil
			}
			var n int64
			var err error
			if dir.p.data >= longSplice {
				m, e := unix.Splice(dir.p.rfd, nil, f.fds[dst], nil, dir.p.data, spliceFlags) // runtime-aware
				n, err = int64(m), e
			} else {
				n, err = rawsys.Splice(dir.p.rfd, f.fds[dst], dir.p.data, spliceFlags)
			}
			if n > 0 {
				dir.p.data -= int(n)
				dir.bytes += n
				l.live[d].Add(n)
				dir.calls++
				f.last = l.now
			}
			if stop, err := drained(f, dst, n, err, "splice"); stop {
				return false, err
			}
		case dir.n > 0:
			if !f.writable[dst] {
				return false, nil
			}
			b := *dir.buf
			n, err := rawsys.Write(f.fds[dst], b[dir.off:dir.off+dir.n])
			if n > 0 {
				dir.off += int32(n)
				dir.n -= int32(n)
				dir.bytes += int64(n)
				l.live[d].Add(int64(n))
				dir.copies++
				f.last = l.now
				if dir.n == 0 {
					l.dropBuf(dir)
				}
			}
			if stop, err := drained(f, dst, int64(n), err, "write"); stop {
				return false, err
			}
		case dir.eof:
			l.dropPipe(dir)
			dir.done = true
			// Unless the session ends here and the caller's close sends
			// this FIN: dst has read its peer's FIN already, so it holds
			// no unread byte that would turn the close into a reset.
			if !(f.callerCloses || f.owned[dst]) || !f.dirs[1-d].done {
				if err := rawsys.Shutdown(f.fds[dst], unix.SHUT_WR); err != nil {
					if err != unix.ENOTCONN {
						return false, os.NewSyscallError("shutdown", err)
					}
					// dst is gone, reset: the reset is the cause, not the
					// refused half-close. Its error is pending (its
					// EPOLLERR not dispatched yet: both came in one
					// batch, this EOF first), or run took it already.
					serr := sockError(f.fds[dst])
					if serr == nil && f.finReset[dst] != 0 {
						serr = f.finReset[dst]
					}
					errno, _ := serr.(unix.Errno)
					switch {
					case serr == nil:
						return false, os.NewSyscallError("shutdown", err)
					case errno != 0 && (errno == unix.EPIPE || f.finSeen[dst]):
						// Reset after its FIN: dst's stream, the other
						// direction's, is whole, and its peer, which
						// sent all of it, reads nothing more. This
						// direction is over (its bytes all went to
						// dst); the other passes the rest and the FIN
						// on, and ends the session with the error at
						// its EOF (finReset), as when run takes it,
						// where failing now would drop that rest and
						// reset its peer (a client that sent its whole
						// request and its FIN, then reset, while the
						// relay still held the end of the request for
						// a slow target, which then half-closed).
						f.finReset[dst] = errno
						if f.dirs[1-d].done {
							return false, dstFailed{errno} // it passed its FIN already: the session ends now
						}
					default:
						return false, dstFailed{serr}
					}
				}
			}
			if f.erred[src] {
				// A reset that came after src's FIN, before the loop
				// read up to it, is left pending behind the EOF, and its
				// EPOLLERR was spent while this direction was not done
				// (dispatch): take it now, or a silent far side keeps
				// the session for ever.
				if err := sockError(f.fds[src]); err != nil {
					return false, err
				}
			}
			if f.finReset[src] != 0 {
				return false, f.finReset[src] // the same, taken before (run, or the other direction's half-close)
			}
			return false, nil
		case !f.readable[src]:
			l.dropPipe(dir)
			return false, nil
		case dir.copyOnly || !dir.bulk && l.copyBelow > 0:
			l.dropPipe(dir) // empty: the last splice was small
			if dir.buf == nil {
				dir.buf = l.getBuf()
			}
			b := *dir.buf
			n, err := readRaw(f.fds[src], b)
			switch {
			case err == nil && n == 0:
				dir.eof = true
				l.dropBuf(dir)
			case err == nil:
				dir.off, dir.n = 0, int32(n)
				dir.copies++
				if n == len(b) {
					dir.bulk = true
				} else if !f.probe[src] {
					// As for a splice below: a read that took less than
					// it asked for took all the socket had.
					f.readable[src] = false
				}
			case err == unix.EINTR:
			case err == unix.EAGAIN && f.urgent[src] && cuts < markRetries && l.cutAtMark(f, src):
				// Cut short at the mark by a signal: read again.
				cuts++
			case err == unix.EAGAIN:
				f.readable[src] = false
				l.dropBuf(dir)
				return false, nil
			default:
				l.dropBuf(dir)
				return false, os.NewSyscallError("read", err)
			}
		default:
			if dir.p == nil {
				p, err := l.pipes.get()
				if err != nil {
					if f.canHandOff() {
						return false, errHandOff
					}
					// The other direction holds bytes, or an error
					// taken already, which a hand-off would drop:
					// this one reads through a buffer of its own
					// from now on instead.
					dir.copyOnly = true
					continue
				}
				dir.p = p
			}
			n, err := int64(0), l.refuse[src]
			if err == nil {
				n, err = rawsys.Splice(f.fds[src], dir.p.wfd, dir.p.size, spliceFlags)
			}
			spliced := true // n came from splice, not from passMark's read
			if f.urgent[src] && (err == unix.EAGAIN || err == nil && n == 0) ||
				err == nil && n == 0 && !f.finTold[src] {
				// At the mark a splice answers EAGAIN, or 0 once the FIN
				// came: urgent data reported, or a 0 before any event
				// told of the FIN, which may be the mark though its
				// EPOLLPRI is not dispatched yet (it came after the event
				// this turn runs on), where taking the 0 for EOF dropped
				// the bytes behind the mark and passed a FIN. An event
				// that tells of the FIN tells of urgent data too
				// (tcp_poll's mask holds both, and the urgent byte comes
				// before the FIN): a 0 after it needs no look. One ioctl
				// per EOF read before its EPOLLRDHUP was dispatched.
				m, at, merr := passMark(f.fds[src], dir.p)
				if at {
					n, err, spliced = int64(m), merr, false // 0 and nil: EOF right after the urgent byte
				} else {
					f.urgent[src] = false
				}
			}
			switch {
			case err == nil && n == 0:
				dir.eof = true
			case err == nil:
				dir.p.data = int(n)
				if spliced {
					dir.calls++
				}
				if int(n) < l.copyBelow {
					dir.bulk = false
				}
				if int(n) < dir.p.slots && !f.probe[src] {
					// Fewer bytes than the pipe has slots: neither its
					// bytes nor its slots ran out (a slot holds a byte
					// at least), so the splice took all the socket had.
					// Bytes arriving later raise a new edge; skip the
					// read that would only answer EAGAIN.
					f.readable[src] = false
				}
			case err == unix.EINTR:
			case err == unix.EAGAIN:
				f.readable[src] = false
				l.dropPipe(dir)
				return false, nil
			// Refused before this direction spliced a byte: the kernel
			// does not splice from src (an MPTCP socket on older
			// kernels), though the other direction's source may splice,
			// and may have, as on the goroutine path, which decides
			// per direction too.
			case isRefused(err) && dir.calls == 0 && f.canHandOff():
				return false, errHandOff
			case isRefused(err) && dir.calls == 0:
				// The other direction holds bytes, or an error taken
				// already, which a hand-off would drop: this direction
				// reads through its own buffer from now on instead.
				dir.copyOnly = true
				l.dropPipe(dir)
			default:
				return false, os.NewSyscallError("splice", err)
			}
		}
	}
	return !dir.done, nil
}

// cutAtMark reports whether a read from f's side src that answered EAGAIN,
// after epoll reported urgent data, was cut short at the mark (cutAtMark);
// not at the mark, it forgets the urgent data, as a splice does.
func (l *loop) cutAtMark(f *flow, src int) bool {
	cut, at := cutAtMark(f.fds[src])
	f.urgent[src] = at
	return cut
}

// drained sorts out a call that wrote n bytes of a direction into its
// destination dst (a splice out of a pipe, a write out of the buffer):
// stop reports that the direction waits for dst to take more (EAGAIN) or
// failed (err).
func drained(f *flow, dst int, n int64, err error, call string) (stop bool, _ error) {
	switch {
	case n > 0, err == unix.EINTR:
		return false, nil
	case err == unix.EAGAIN:
		f.writable[dst] = false
		return true, nil
	case err == nil:
		return true, os.NewSyscallError(call, io.ErrNoProgress)
	}
	return true, os.NewSyscallError(call, err)
}

// dropPipe gives back dir's pipe, if it holds one; the pool closes it when
// bytes are stuck in it.
func (l *loop) dropPipe(dir *flowDir) {
	if dir.p != nil {
		l.pipes.put(dir.p)
		dir.p = nil
	}
}

// copyOnlyBytes sizes the buffer of a direction that reads through one
// because it could not splice (flowDir.copyOnly) on a loop without
// Options.CopyBelow.
const copyOnlyBytes = 64 << 10

// maxFreeBufs bounds the small-read buffers a loop keeps for reuse. A
// direction holds one only while its bytes wait for a destination that is
// not writable, so a loop rarely needs more than a few at once.
const maxFreeBufs = 64

// getBuf returns a small-read buffer of l.bufBytes bytes, reused if one is
// free. The buffers are the loop goroutine's own.
func (l *loop) getBuf() *[]byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs[n-1] = nil
		l.bufs = l.bufs[:n-1]
		return b
	}
	b := make([]byte, l.bufBytes)
	return &b
}

// dropBuf gives back dir's buffer, if it holds one, and forgets its bytes.
func (l *loop) dropBuf(dir *flowDir) {
	if dir.buf != nil {
		if len(l.bufs) < maxFreeBufs {
			l.bufs = append(l.bufs, dir.buf)
		}
		dir.buf, dir.off, dir.n = nil, 0, 0
	}
}

// stalled reports whether direction d holds bytes that its destination
// does not take now (it answered EAGAIN).
func (f *flow) stalled(d int) bool {
	return !f.writable[1-d] && f.dirs[d].holds()
}

// holds reports whether dir's pipe or buffer holds bytes.
func (dir *flowDir) holds() bool {
	return dir.p != nil && dir.p.data > 0 || dir.n > 0
}

// canHandOff reports whether f can move to the goroutine path: no pipe or
// buffer holds bytes, and no socket's error was taken to end the session
// with later (finReset), which that path, reading only an EOF there, would
// never report.
func (f *flow) canHandOff() bool {
	return !f.inFlight() && f.finReset == [2]unix.Errno{}
}

// inFlight reports whether a pipe or a buffer of f holds bytes.
func (f *flow) inFlight() bool {
	for i := range f.dirs {
		if d := &f.dirs[i]; d.p != nil && d.p.data > 0 || d.n > 0 {
			return true
		}
	}
	return false
}

func (f *flow) stats() Stats {
	a, b := &f.dirs[0], &f.dirs[1]
	return Stats{
		ClientToUpstream: a.bytes,
		UpstreamToClient: b.bytes,
		Spliced:          a.calls+b.calls > 0,
		SpliceCalls:      a.calls + b.calls,
		CopyCalls:        a.copies + b.copies,
		Fallback:         a.copyOnly || b.copyOnly,
	}
}

// unlink takes f out of the loop: no event reaches it any more.
func (l *loop) unlink(f *flow) {
	f.ended = true
	l.mu.Lock()
	delete(l.flows, f.id)
	stop := l.unwatch(f)
	l.mu.Unlock()
	for i := range f.dirs {
		l.dropPipe(&f.dirs[i])
		l.dropBuf(&f.dirs[i])
	}
	if stop != nil {
		stop()
	}
}

// finish ends f and reports it. It closes the sockets it took over
// (Options.TakeSockets); others the caller closes, and until then their
// events find no flow and are dropped. A socket whose peer's stream f cuts
// short, dropping bytes the relay acknowledged for it (held in a pipe or a
// buffer, or still unread in the source socket), gets SO_LINGER 0 first:
// an idle timeout, the context's end. That peer must not read a FIN behind
// a stream the relay cut short; one for which nothing was dropped (an idle
// keep-alive connection) still gets a FIN.
func (l *loop) finish(f *flow, err error) { l.end(f, err, false) }

// fail ends f, one of whose connections failed, with err. A socket whose
// peer's stream is cut short, the direction toward it not done, gets
// SO_LINGER 0 first, so that its close, the loop's or the caller's, resets
// that peer (resetOnClose).
func (l *loop) fail(f *flow, err error) { l.end(f, err, true) }

func (l *loop) end(f *flow, err error, failed bool) {
	for side, fd := range f.fds {
		toward := &f.dirs[1-side]
		if fd >= 0 && !toward.done && (failed || toward.holds() || unread(f.fds[1-side])) {
			lingerZero(fd)
		}
	}
	l.unlink(f)
	for side, own := range f.owned {
		if own {
			rawsys.Close(f.fds[side])
		}
	}
	f.done.Ended(f.stats(), err)
}

// handOff moves f, whose pipes hold no byte, to the goroutine path, which
// falls back to plain copies where splice cannot go on. Its sockets leave
// the loop's epoll set first: a descriptor that package net duplicates would
// otherwise stay registered, and wake the loop for every segment it
// receives. Loop goroutine only.
func (l *loop) handOff(f *flow) {
	for _, fd := range f.fds {
		rawsys.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil) // ENOENT: its registration failed
	}
	l.unlink(f)
	l.goPlain(f)
}

// goPlain runs f, which the loop does not serve (unlinked, or never
// registered), on the goroutine path; the Stats reported count what the
// loop moved too. A direction that passed its EOF on is finished there: it
// only watches its source.
func (l *loop) goPlain(f *flow) {
	if f.unripe {
		f.unripe = false
		l.mature(f.fds[sideUpstream]) // the plain path holds a goroutine: no waiting for it
	}
	go l.runPlain(f, f.stats(), [2]bool{f.dirs[0].done, f.dirs[1].done})
}

// runPlain is goPlain's goroutine. prev is what the loop moved.
func (l *loop) runPlain(f *flow, prev Stats, finished [2]bool) {
	// The loop's own descriptors go back into package net, which the plain
	// path needs, and are closed with it.
	client, upstream, err := adopt(f)
	if err != nil {
		f.done.Ended(prev, err)
		return
	}
	st, err := l.fallback(f.ctx, client, upstream, finished)
	if f.owned[sideClient] {
		client.Close() // before done, as finish does
	}
	if f.owned[sideUpstream] {
		upstream.Close()
	}
	st.ClientToUpstream += prev.ClientToUpstream
	st.UpstreamToClient += prev.UpstreamToClient
	st.SpliceCalls += prev.SpliceCalls
	st.CopyCalls += prev.CopyCalls
	st.Spliced = st.Spliced || prev.Spliced
	st.Fallback = st.Fallback || prev.Fallback
	f.done.Ended(st, err)
}
