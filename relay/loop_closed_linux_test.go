//go:build linux

package relay

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoopClosedAddSparesEpfd: a session given to a loop that returned
// (closed, no session left) goes to the goroutine path from the loop's
// descriptors, and must leave the loop's epoll descriptor alone: the loop
// closed it, and its number may be another file's. The hand-off used to
// run EPOLL_CTL_DEL on it for both sockets; here the number is another
// epoll instance's, in which the same sockets are registered, and the DEL
// took them out of it.
// Not parallel: it reuses a descriptor number the process just freed, which
// no other test may take in between.
func TestLoopClosedAddSparesEpfd(t *testing.T) {
	r := newRelayLoops(t, 1, Options{})
	l := r.loops.loops[0]
	l.close()
	<-l.finished // the loop released its descriptors
	epfd := l.epfd
	if _, err := unix.FcntlInt(uintptr(epfd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("the returned loop's epoll descriptor %d is open (%v)", epfd, err)
	}
	stranger, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if stranger != epfd { // it may have taken the number itself, the lowest free
		err = unix.Dup3(stranger, epfd, unix.O_CLOEXEC)
		unix.Close(stranger)
		if err != nil {
			t.Fatal(err)
		}
	}
	defer unix.Close(epfd)

	g := newRig(t)
	fds := bareFds(t, g)
	for i, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i + 1)} // data not 0: counted by epollSessions
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			t.Fatal(err)
		}
	}
	r.StartFds(context.Background(), fds[0], fds[1], func(st Stats, err error) { g.done <- pipeResult{st, err} })
	// The session lives on the goroutine path, which holds the sockets:
	// their entries stay in the stranger's set unless someone removed them.
	if n := epollSessions(t, epfd); n != 2 {
		t.Errorf("%d of 2 sockets left in the epoll instance that took the closed loop's descriptor number; want 2", n)
	}
	roundTrip(t, g)
	g.client.CloseWrite()
	g.upstream.CloseWrite()
	if res := g.wait(t); res.err != nil || res.st.ClientToUpstream != 1 || res.st.UpstreamToClient != 1 {
		t.Fatalf("session: %v, %+v; want nil, 1 byte each way", res.err, res.st)
	}
}
