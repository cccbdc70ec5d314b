//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoopEndedBeforeRegistered: a session whose context ends the moment it
// is published to its loop, and which the loop ends (closing its sockets)
// before add returns, must leave nothing in the loop's epoll set, even when
// its descriptor numbers are reused at once by an unrelated file. Were the
// sockets registered after the session went public, the registration could
// land on a closed number (EBADF) or, as here, on the unrelated file.
// Not parallel: it reuses descriptor numbers the process just freed, which
// no other test may take in between.
func TestLoopEndedBeforeRegistered(t *testing.T) {
	r := newRelayLoops(t, 1, Options{})
	l := r.loops.loops[0]
	g := newRig(t)
	fds := bareFds(t, g)
	stranger, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(stranger)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	var reused []int
	testHookAdded = func() {
		testHookAdded = nil
		cancel()
		<-ended // the loop ended the session and closed fds
		for _, fd := range fds {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
				t.Errorf("descriptor %d still open after the session ended (%v)", fd, err)
				continue
			}
			if err := unix.Dup3(stranger, fd, unix.O_CLOEXEC); err != nil {
				t.Error(err)
				continue
			}
			reused = append(reused, fd)
		}
	}
	defer func() { testHookAdded = nil }()
	r.StartFds(ctx, fds[0], fds[1], func(_ Stats, err error) { ended <- err })
	defer func() {
		for _, fd := range reused {
			unix.Close(fd)
		}
	}()
	if n := epollSessions(t, l.epfd); n != 0 {
		t.Errorf("%d descriptors in the loop's epoll set after its only session ended; want 0", n)
	}
	for _, fd := range reused {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); !errors.Is(err, unix.ENOENT) {
			t.Errorf("unrelated file at the session's descriptor %d: EPOLL_CTL_DEL answers %v; want ENOENT (never registered)", fd, err)
		}
	}
}

// TestLoopRegisterFails: a session whose socket the loop's epoll set
// refuses (here a regular file, EPERM) ends with that error, through the
// loop as any other end: its descriptors closed before done runs, nothing
// of it left in the epoll set, and the loop still returns on close. Either
// side may be the one refused; when it is the upstream, the client was
// registered already. The other socket's peer reads a reset.
func TestLoopRegisterFails(t *testing.T) {
	t.Parallel()
	for _, refused := range []int{sideClient, sideUpstream} {
		r := newRelayLoops(t, 1, Options{})
		l := r.loops.loops[0]
		g := newRig(t)
		conns := []*net.TCPConn{g.relayA, g.relayB}
		inodes := socketInodes(t, conns[1-refused])
		fds := bareFds(t, g)
		file, err := os.Open(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.FcntlInt(file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		file.Close()
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fds[refused])
		fds[refused] = fd
		type ended struct {
			err  error
			open []uint64
			regs int
		}
		done := make(chan ended, 1)
		r.StartFds(context.Background(), fds[0], fds[1], func(_ Stats, err error) {
			done <- ended{err, openInodes(t, inodes), epollSessions(t, l.epfd)}
		})
		var e ended
		select {
		case e = <-done:
		case <-time.After(safety):
			t.Fatalf("refused side %d: done did not run", refused)
		}
		if !errors.Is(e.err, unix.EPERM) {
			t.Errorf("refused side %d: session ended with %v; want epoll_ctl's EPERM", refused, e.err)
		}
		if len(e.open) > 0 || e.regs != 0 {
			t.Errorf("refused side %d: when done ran, %d sockets open, %d in the epoll set; want none", refused, len(e.open), e.regs)
		}
		// The relay failed mid-session: the peer of the socket it did
		// take must read a reset, not a FIN that would pass for the end
		// of its peer's stream (a target took the bytes a caller
		// wrote before, a client its reply, as all there was).
		far := [2]*net.TCPConn{g.client, g.upstream}[1-refused]
		if _, err := io.Copy(io.Discard, far); !errors.Is(err, unix.ECONNRESET) {
			t.Errorf("refused side %d: the other side's peer read to %v; want ECONNRESET", refused, err)
		}
		l.close()
		<-l.finished
	}
}
