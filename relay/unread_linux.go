package relay

import "golang.org/x/sys/unix"

// unread reports whether socket fd holds received bytes not read yet
// (SIOCINQ): bytes its peer sent and the kernel acknowledged, which a
// session that ends now drops (finish, pipeGoroutines).
func unread(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}

// sockGone reports whether TCP socket fd is closed under the relay (TCP_CLOSE:
// reset, or timed out) though the relay sent it no FIN: a zero-length send,
// which moves nothing in ESTABLISHED or CLOSE_WAIT, fails only then. Call it
// with no error pending (it would take it).
func sockGone(fd int) bool {
	return unix.Sendto(fd, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil) != nil
}
