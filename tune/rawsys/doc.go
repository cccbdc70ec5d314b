// Package rawsys holds the socket system calls sluice makes through
// unix.RawSyscall, with the socket addresses they take and return built and
// read in place, so that none allocates. It is a leaf beside tune, relay and
// cmd/sluice, which all use it; it imports only golang.org/x/sys/unix, knows
// no SOCKS and sets no options. It also makes the epoll instances that the
// relay's event loops, its reset watch and the dial waiter wait on through
// the runtime poller (Epoll). Outside Linux it is empty.
//
// # Why raw
//
// A system call made through syscall.Syscall (or x/sys/unix's wrappers, or
// package net) tells the runtime it is in the kernel: entersyscall and
// exitsyscall. That buys something only for a call that can block. Every
// call here is made on a non-blocking descriptor (or with a zero timeout),
// so it buys nothing, and it costs twice:
//
//   - While a P sits in a system call for more than a sysmon tick (20 µs; on
//     loopback a connect, close or splice runs the peer's TCP work too, and
//     can last that long), sysmon hands the P to another thread, and the
//     calling thread then has to find a P again on return.
//   - Entering a system call after the process had gone idle wakes sysmon
//     from its deep sleep (entersyscallWakeSysmon). Sysmon then polls every
//     20 µs for a millisecond or more, each time a timer and two context
//     switches on the relay's CPU. Under `sluice-bench rr -c 64`, the
//     handshake's read and reply made that way cost 0.14 nanosleep and
//     0.014 futex calls per connection; made raw, 0.007 and 0.001, and
//     0.94 to 0.95 times the relay's CPU per connection (README,
//     Benchmarks).
//
// A caller that wants the runtime told, such as the relay loops' splices of
// 64 KiB or more (relay.longSplice), uses x/sys/unix instead.
//
// Errors are the kernel's errno as a syscall.Errno, unwrapped, as x/sys/unix
// returns them, so that callers can compare them with unix.EAGAIN and the
// like before wrapping them.
package rawsys
