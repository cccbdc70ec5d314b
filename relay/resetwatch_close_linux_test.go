//go:build linux

package relay

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// TestResetWatchClosedSourceSparesReusedFd: a caller may close a conn while
// Pipe runs (package net allows it), and the number of a watched source's
// descriptor may then belong to another socket, registered with the same
// watch (another session's). The closed source's deregistration must leave
// that socket's registration alone; it deleted it by number, and the other
// session's resets went unseen again.
func TestResetWatchClosedSourceSparesReusedFd(t *testing.T) {
	t.Parallel()
	r := New(Options{Loops: -1})
	defer r.Close()
	w := &r.resets

	// One registration that stays, so that the instance stays too.
	keepA, keepB := tcpPair(t)
	keep := watchedHalf(r, keepA, keepB)
	w.add(keep)
	defer func() {
		w.remove(keep)
		waitWatchGone(t, w) // and it goes with the last
	}()

	for try := 0; ; try++ {
		a, b := tcpPair(t) // closed by t.Cleanup
		h := watchedHalf(r, a, b)
		w.add(h)
		if h.reg.id == 0 {
			t.Fatal("the source was not registered")
		}
		fd, err := rawFd(a)
		if err != nil {
			t.Fatal(err)
		}
		a.Close() // by its caller, mid-session: fd is free

		// Another socket gets the number (the lowest free one at or
		// above fd: fd itself, unless someone took it meanwhile).
		other, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		dup, err := unix.FcntlInt(uintptr(other), unix.F_DUPFD_CLOEXEC, fd)
		unix.Close(other)
		if err != nil {
			t.Fatal(err)
		}
		if dup != fd {
			unix.Close(dup)
			w.remove(h)
			if try == 10 {
				t.Fatalf("descriptor %d taken by someone else %d times in a row", fd, try+1)
			}
			continue
		}
		// ... and is registered with the watch, as another session's
		// source would be.
		ev := unix.EpollEvent{Events: unix.EPOLLET}
		w.mu.Lock()
		err = rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, dup, &ev)
		w.mu.Unlock()
		if err != nil {
			unix.Close(dup)
			t.Fatal(err)
		}

		w.remove(h) // the closed source's session ends

		w.mu.Lock()
		err = rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, dup, &ev)
		rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, dup, nil)
		w.mu.Unlock()
		unix.Close(dup)
		if err != nil {
			t.Fatalf("the socket now at descriptor %d is no longer registered (%v): the closed source's deregistration took it", fd, err)
		}
		return
	}
}

// watchedHalf returns the client->upstream half of a session of r over
// src and dst, as the goroutine path builds it, for the reset watch.
func watchedHalf(r *Relay, src, dst *net.TCPConn) *half {
	s := &session{client: src, upstream: dst, resets: &r.resets}
	s.halves[0] = half{label: "client->upstream", cause: causeClientToUpstream, s: s, src: src, dst: dst, live: &r.live[0]}
	s.halves[1] = half{label: "upstream->client", cause: causeUpstreamToClient, s: s, src: dst, dst: src, live: &r.live[1]}
	return &s.halves[0]
}
