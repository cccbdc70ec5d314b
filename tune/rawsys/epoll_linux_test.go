package rawsys

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEpollWaits: a goroutine in an Epoll's RawConn.Read waits for an event
// of a descriptor registered in it, and the callback harvests it; with
// nothing ready, Read returns at the file's read deadline.
func TestEpollWaits(t *testing.T) {
	t.Parallel()
	ep, err := NewEpoll("test")
	if err != nil {
		t.Fatal(err)
	}
	defer ep.File.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(efd)}
	if err := EpollCtl(ep.Fd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		t.Fatal(err)
	}
	var events [4]unix.EpollEvent
	harvest := func(got *int32) func(uintptr) bool {
		return func(fd uintptr) bool {
			n, err := EpollPoll(int(fd), events[:])
			if err != nil {
				t.Error(err)
				return true
			}
			for _, e := range events[:n] {
				*got = e.Fd
			}
			return n > 0
		}
	}

	ep.File.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	var got int32 = -1
	if err := ep.Conn.Read(harvest(&got)); !errors.Is(err, os.ErrDeadlineExceeded) || got != -1 {
		t.Fatalf("Read with nothing ready: %v, event of fd %d; want the deadline, no event", err, got)
	}

	ep.File.SetReadDeadline(time.Now().Add(20 * time.Second)) // a safety net
	done := make(chan error, 1)
	go func() { done <- ep.Conn.Read(harvest(&got)) }()
	var one = [8]byte{1}
	if _, err := unix.Write(efd, one[:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || got != int32(efd) {
		t.Fatalf("Read: %v, event of fd %d; want the eventfd's (%d)", err, got, efd)
	}
}

// TestEpollNotPollable: an epoll descriptor that the runtime poller does not
// take (os.NewFile leaves a blocking one out, as it does one whose
// registration failed) makes no Epoll: a Read on it would return at once,
// and whoever waits in it (an event loop, a dial waiter) would leave its
// sessions waiting. The caller does without instead.
func TestEpollNotPollable(t *testing.T) {
	t.Parallel()
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC) // blocking
	if err != nil {
		t.Fatal(err)
	}
	ep, err := EpollOf(fd, "test")
	if err == nil {
		ep.File.Close()
		t.Fatal("EpollOf(a blocking epoll descriptor) made an Epoll; want an error")
	}
	if !errors.Is(err, os.ErrNoDeadline) {
		t.Errorf("error %v; want one wrapping os.ErrNoDeadline", err)
	}
}
