//go:build linux

package relay

import (
	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// passMark gets a socket that stopped at its urgent mark past it. A client
// that sends a byte with MSG_OOB (telnet's Synch, FTP's ABOR) puts the mark
// in its stream, and splice never passes it: a splice from the socket
// answers EAGAIN there for ever, or 0 once the FIN has come, which would
// stall the direction or end it early. A read(2) passes it, skipping the
// urgent byte (SO_OOBINLINE is off: the relay forwards the stream, not its
// out-of-band byte), so passMark reads one byte and puts the byte after the
// mark, if one came, into p, which must be empty. at is false, and nothing
// read, when fd is not at the mark. n is the bytes put in p (0 or 1); with
// at true, n 0 and err nil the socket reached EOF. A read that a signal cut
// short at the mark (cutAtMark) is made again.
func passMark(fd int, p *pipe) (n int, at bool, err error) {
	if !atMark(fd) {
		return 0, false, nil
	}
	var b [1]byte
	for tries := 0; ; {
		n, err = readRaw(fd, b[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && tries < markRetries && urgentIn(fd):
			tries++
			continue
		}
		break
	}
	if err != nil || n == 0 {
		return 0, true, err
	}
	if _, err := rawsys.Write(p.wfd, b[:]); err != nil { // an empty pipe takes a byte
		return 0, true, err
	}
	return 1, true, nil
}

// cutAtMark reports whether a read(2) of fd that answered EAGAIN was cut
// short at the urgent mark: Linux's tcp_recvmsg answers EAGAIN there, before
// it skips the urgent byte, when the reading thread has a signal pending
// (the Go runtime's preemption SIGURG, a profiler's SIGPROF), though the
// bytes behind the mark are in already, and no edge will come for them: a
// direction that then waited for one stalled until its peer sent more. It
// is cut when fd is at its mark (at) and the urgent byte is in; before that
// byte came, EAGAIN is the answer, and the byte's arrival raises an edge.
// One ioctl, and one recv when at the mark.
func cutAtMark(fd int) (cut, at bool) {
	if !atMark(fd) {
		return false, false
	}
	return urgentIn(fd), true
}

// atMark reports whether fd's next byte is its urgent mark (SIOCATMARK).
func atMark(fd int) bool {
	mark, err := unix.IoctlGetInt(fd, unix.SIOCATMARK)
	return err == nil && mark != 0
}

// urgentIn reports whether fd's urgent byte has come and waits to be
// passed: a peek at it out of band finds it.
func urgentIn(fd int) bool {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_OOB|unix.MSG_PEEK)
	return err == nil && n == 1
}

// readRaw is rawsys.Read for a socket that may be at its urgent mark, with
// the test hook (testHookCutAtMark) in front of it.
func readRaw(fd int, b []byte) (int, error) {
	if cutByTest(fd) {
		return 0, unix.EAGAIN
	}
	return rawsys.Read(fd, b)
}
