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

// closeWrite half-closes dst, the destination of a direction whose source
// reached EOF. shutdown(2) answers ENOTCONN once the connection is closed
// both ways, which it is when this FIN went out before and the peer's came
// since: an event loop passed this direction's EOF on and then handed the
// session to the goroutine path, which reads the EOF again. That is no
// failure unless the socket holds an error (a reset), which is returned
// then. Only the ENOTCONN case costs a system call (getsockopt).
func closeWrite(dst *net.TCPConn) error {
	err := dst.CloseWrite()
	if !errors.Is(err, syscall.ENOTCONN) {
		return err
	}
	rc, rerr := dst.SyscallConn()
	if rerr != nil {
		return err
	}
	var serr error
	if cerr := rc.Control(func(fd uintptr) { serr = sockError(int(fd)) }); cerr != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("shutdown", serr)
	}
	return nil
}
