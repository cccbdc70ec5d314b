package relay

import "golang.org/x/sys/unix"

// unread reports whether socket fd holds received bytes not read yet:
// bytes its peer sent and the kernel acknowledged, which a session that
// ends now drops (finish, pipeGoroutines). A peek, not SIOCINQ, which stops
// at an urgent mark (0 there though bytes came after it); the peek skips
// the urgent byte, as the relay's reads do (SO_OOBINLINE is off). A signal
// pending at the mark makes it answer EAGAIN, counted as nothing unread; an
// error pending with nothing queued is taken (recv answers it): call it only
// as the session ends.
func unread(fd int) bool {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == nil && n > 0
}

// sockGone reports whether TCP socket fd is closed under the relay (TCP_CLOSE:
// reset, or timed out) though the relay sent it no FIN: a zero-length send,
// which moves nothing in ESTABLISHED or CLOSE_WAIT, fails only then. Call it
// with no error pending (it would take it).
func sockGone(fd int) bool {
	return unix.Sendto(fd, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil) != nil
}
