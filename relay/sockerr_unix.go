//go:build unix

package relay

import (
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
