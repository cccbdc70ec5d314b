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
// at true, n 0 and err nil the socket reached EOF.
func passMark(fd int, p *pipe) (n int, at bool, err error) {
	mark, err := unix.IoctlGetInt(fd, unix.SIOCATMARK)
	if err != nil || mark == 0 {
		return 0, false, nil
	}
	var b [1]byte
	for {
		n, err = rawsys.Read(fd, b[:])
		if err != unix.EINTR {
			break
		}
	}
	if err != nil || n == 0 {
		return 0, true, err
	}
	if _, err := rawsys.Write(p.wfd, b[:]); err != nil { // an empty pipe takes a byte
		return 0, true, err
	}
	return 1, true, nil
}
