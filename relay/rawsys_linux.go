package relay

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loop's system calls go through RawSyscall, long splices excepted
// (longSplice): none of them can block (every descriptor is non-blocking,
// splice has SPLICE_F_NONBLOCK, epoll_wait a zero timeout), so the runtime's
// entersyscall and exitsyscall buy nothing, and they cost: while a P sits in
// a system call for more than a sysmon tick (20 µs; a splice or close on
// loopback runs the peer's TCP work too), sysmon hands it to another thread,
// and the loop's thread then has to find a P again on return.

// longSplice: a splice from a pipe holding at least this many bytes into a
// socket, which on loopback runs the receiving socket's TCP work for a full
// segment or more (tens of microseconds, hundreds for a full pipe), goes
// through unix.Splice instead, which tells the runtime, as package net's
// calls do: while it lasts past a sysmon tick, the loop's P goes to another
// thread, and the loop's other sessions and the other loops on that P move
// on instead of waiting for the call to return. Finding a P again on return
// is worth it only for calls that long: with 8 bulk streams, relay capped at
// 40 % of a CPU, 1.09x the throughput at 0.91x the CPU per GiB against
// RawSyscall for every splice; 1 stream and short sessions, whose splices
// stay raw, unchanged (README, --loops).
const longSplice = 64 << 10

// splice is unix.Splice without offsets, raw.
func splice(rfd, wfd, n, flags int) (int64, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int64(r), nil
}

// closeFd is unix.Close, raw.
func closeFd(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// shutdownWrite is unix.Shutdown(fd, SHUT_WR), raw.
func shutdownWrite(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0); e != 0 {
		return e
	}
	return nil
}

// epollCtl is unix.EpollCtl, raw.
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// epollPoll is unix.EpollWait with a zero timeout, raw.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
