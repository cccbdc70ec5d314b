//go:build unix

package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// watchErrors: a finished half can wait for its source to fail
// (session.watchSource).
const watchErrors = true

// lingerZero sets SO_LINGER 0 on socket fd: its close resets the peer.
func lingerZero(fd int) {
	syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
}

// sockError takes the pending error of socket fd (SO_ERROR), nil if none.
func sockError(fd int) error {
	n, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	switch {
	case err != nil:
		return os.NewSyscallError("getsockopt", err)
	case n != 0:
		return syscall.Errno(n)
	}
	return nil
}

// passEOF half-closes h's destination once h read EOF from its source,
// unless that EOF stands for a failure of the source whose error another
// call took first: after a reset whose error is taken (SO_ERROR clears it,
// and so does a write into the socket that fails) a read answers 0, and
// passing that on as a FIN would end a stream cut short as if it were
// whole. It then returns errCutShort, and the call that took the error ends
// the session. The calls that do not write the socket record what they
// took (takenFrom); for the other direction's writes, which cannot record
// before the kernel clears the error, passEOF looks at the socket itself
// while the relay has sent it no FIN: gone (a zero-length send fails) with
// no error pending, it failed; an error still pending came after the FIN
// that h read, so the stream is whole, and h ends the session with that
// error once its FIN is out (finReset).
func (h *half) passEOF() error {
	if h.watching {
		h.s.resets.remove(h) // from now on the watch does not touch h
	}
	taken, whole := h.s.takenFrom(h.s.side(h))
	if taken != nil && !whole {
		return errCutShort
	}
	pending := taken // whole: h ends with it once its FIN is out
	if taken == nil && !h.s.other(h).shutting.Load() {
		rc, err := h.src.SyscallConn()
		if err != nil {
			return err
		}
		if hook := testHookLookingAtSource; hook != nil {
			hook(h.src)
		}
		gone := false
		rc.Control(func(fd uintptr) {
			if pending = sockError(int(fd)); pending == nil {
				gone = sockGone(int(fd))
			}
		})
		// A send fails too once the other direction's half-close has
		// shut the socket's writing, which it may have done since the
		// look above (it sets shutting first): the socket is not gone
		// then. Taking it for gone returned errCutShort, which ends
		// nothing, and the session hung for ever, its other half
		// watching its source.
		if gone && !h.s.other(h).shutting.Load() {
			return errCutShort
		}
	}
	if hook := testHookHalfClosing; hook != nil {
		hook(h.src)
	}
	err := closeWrite(h)
	if err == nil && pending == nil && taken == nil {
		// The other direction's half-close may have taken src's error
		// (a reset after its FIN) since the look above, and left it to
		// h, not shutting then (closeWrite): h, shutting now, looks
		// again. It records before it reads h.shutting, and h set that
		// before this look, so one of the two reports the error.
		if t, whole := h.s.takenFrom(h.s.side(h)); t != nil && whole {
			pending = t
		}
	}
	if err == nil && pending != nil && h.finReset == nil {
		h.finReset = fmt.Errorf("relay: %s: %w", h.label, pending)
	}
	return err
}

// closeWrite half-closes h's destination, that of a direction whose source
// reached EOF. shutdown(2) answers ENOTCONN once the connection is gone both
// ways, as when a reset came in just before: the socket's pending error (a
// reset, SO_ERROR) is returned then, as the failure it is, of dst
// (dstFailed: the direction that reads dst reports it), and recorded for
// that direction (takeError), unless it is EPIPE, a reset after dst's FIN,
// while that direction still runs: it then passes the rest of dst's whole
// stream on and ends the session with the error (passEOF). With none
// pending, another call took it (the other direction, which reads dst and
// ends the session with it), and this direction has nothing to add. Only
// the ENOTCONN case costs a system call (getsockopt). An event loop that
// hands a session over names the directions that passed their EOF on
// already (pipeGoroutines), so no destination is half-closed twice.
func closeWrite(h *half) error {
	dst := h.dst
	h.shutting.Store(true)
	if hook := testHookCloseWrite; hook != nil {
		hook(dst)
	}
	err := dst.CloseWrite()
	if !errors.Is(err, syscall.ENOTCONN) {
		return err
	}
	rc, rerr := dst.SyscallConn()
	if rerr != nil {
		return err
	}
	serr := h.s.takeError(1-h.s.side(h), rc, false)
	if serr == nil {
		return nil
	}
	if errors.Is(serr, syscall.EPIPE) && !h.s.other(h).shutting.Load() {
		// EPIPE: dst was reset after its FIN (CLOSE_WAIT). Its stream,
		// the other direction's, is whole, and its peer, which sent
		// all of it, reads nothing more: this direction is over, and
		// the other, not at its EOF yet, passes the rest and the FIN
		// on, then ends the session with the error, recorded as whole
		// (passEOF), where failing now would drop that rest and reset
		// its peer.
		if hook := testHookLeftToOther; hook != nil {
			hook(dst)
		}
		return nil
	}
	return dstFailed{os.NewSyscallError("shutdown", serr)}
}

// Test hooks, when a test sets them (in init, before any session):
// testHookCloseWrite is called with dst as closeWrite begins;
// testHookHalfClosing with a direction's source as passEOF is about to
// half-close its destination; testHookLeftToOther with dst when closeWrite
// leaves dst's error (EPIPE) to the other direction;
// testHookLookingAtSource with a direction's source as passEOF is about to
// look at it (sockGone).
var testHookCloseWrite, testHookHalfClosing, testHookLeftToOther, testHookLookingAtSource func(c *net.TCPConn)
