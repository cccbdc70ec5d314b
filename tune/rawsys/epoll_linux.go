package rawsys

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Epoll is an epoll instance that the runtime poller waits on (an epoll
// descriptor is itself pollable): a goroutine in File's RawConn.Read, whose
// callback harvests events with EpollPoll, waits for them without holding a
// thread, and File's read deadline bounds that wait. The event loops, the
// reset watch and the dial waiter are built on one each.
type Epoll struct {
	Fd   int             // the instance; File's, valid until File is closed
	File *os.File        // closing it closes Fd
	Conn syscall.RawConn // File's
}

// NewEpoll makes an Epoll (close-on-exec, non-blocking), named name for
// File. It fails when the runtime poller does not take the descriptor:
// os.NewFile then falls back to blocking I/O, as when the per-user
// fs.epoll.max_user_watches is used up, and a Read on such a file could
// neither wait nor meet a deadline.
func NewEpoll(name string) (*Epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	return EpollOf(fd, name)
}

// EpollOf makes the Epoll of the non-blocking epoll descriptor fd, which it
// owns from the call on: on an error fd is closed.
func EpollOf(fd int, name string) (*Epoll, error) {
	f := os.NewFile(uintptr(fd), name)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: epoll descriptor not in the runtime poller: %w", name, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Epoll{Fd: fd, File: f, Conn: rc}, nil
}
