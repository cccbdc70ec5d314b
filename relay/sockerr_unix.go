//go:build unix

package relay

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// watchErrors: a finished half can wait for its source to fail
// (session.watchSource).
const watchErrors = true

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
// call took first (cutShort): a read after a reset whose error the reset
// watch or the other direction took answers 0, and passing that on as a FIN
// would end a stream cut short as if it were whole. It then returns
// errCutShort.
func (h *half) passEOF() error {
	if h.s.cutShort(h.s.side(h)) {
		return errCutShort
	}
	return closeWrite(h)
}

// closeWrite half-closes h's destination, that of a direction whose source
// reached EOF. shutdown(2) answers ENOTCONN once the connection is gone both
// ways, as when a reset came in just before: the socket's pending error (a
// reset, SO_ERROR) is returned then, as the failure it is, of dst
// (dstFailed: the direction that reads dst reports it), and recorded for
// that direction (takeError). With none pending, another call took it (the
// other direction, which reads dst and ends the session with it), and this
// direction has nothing to add. Only the ENOTCONN case costs a system call
// (getsockopt). An event loop that hands a session over names the
// directions that passed their EOF on already (pipeGoroutines), so no
// destination is half-closed twice.
func closeWrite(h *half) error {
	dst := h.dst
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
	if serr := h.s.takeError(1-h.s.side(h), rc, false); serr != nil {
		return dstFailed{os.NewSyscallError("shutdown", serr)}
	}
	return nil
}

// testHookCloseWrite, when a test sets it, is called with dst as closeWrite
// begins.
var testHookCloseWrite func(dst *net.TCPConn)
