package relay

import "golang.org/x/sys/unix"

// unread reports whether socket fd holds received bytes not read yet
// (SIOCINQ): bytes its peer sent and the kernel acknowledged, which a
// session that ends now drops (finish, pipeGoroutines).
func unread(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}
