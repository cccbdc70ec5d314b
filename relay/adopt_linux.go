package relay

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// FileConn wraps a TCP socket's bare descriptor in a *net.TCPConn, which
// holds a duplicate, and closes the descriptor: for the plain path of a
// session that StartFds took, or a caller's socket that needs package net
// after all. Package net sets TCP_NODELAY and its keepalive defaults on
// every socket it adopts (net.FileConn); the socket keeps the values it had
// instead (its listener's or dialler's options).
func FileConn(fd int) (*net.TCPConn, error) { return fileConn(fd, nil) }

// fileConn is FileConn; failed is wrapFd's.
func fileConn(fd int, failed func(fd int)) (*net.TCPConn, error) {
	kept := saveOpts(fd)
	tc, err := wrapFd(fd, failed)
	if err != nil {
		return nil, err
	}
	if rc, err := tc.SyscallConn(); err == nil {
		rc.Control(func(s uintptr) { kept.restore(int(s)) })
	}
	return tc, nil
}

// sockOpt is one integer socket option and its value.
type sockOpt struct {
	level, name, v int
	ok             bool // read
}

// keptOpts are the options package net overwrites when it adopts a socket.
type keptOpts [5]sockOpt

func saveOpts(fd int) keptOpts {
	k := keptOpts{
		{level: unix.IPPROTO_TCP, name: unix.TCP_NODELAY},
		{level: unix.SOL_SOCKET, name: unix.SO_KEEPALIVE},
		{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPIDLE},
		{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPINTVL},
		{level: unix.IPPROTO_TCP, name: unix.TCP_KEEPCNT},
	}
	for i := range k {
		v, err := unix.GetsockoptInt(fd, k[i].level, k[i].name)
		k[i].v, k[i].ok = v, err == nil
	}
	return k
}

// restore sets back every option read that differs now.
func (k *keptOpts) restore(fd int) {
	for _, o := range k {
		if !o.ok {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, o.level, o.name); err == nil && v != o.v {
			unix.SetsockoptInt(fd, o.level, o.name, o.v)
		}
	}
}

// rawFd returns c's descriptor. It stays valid while c is open, which the
// caller guarantees until the session's done runs.
func rawFd(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// takeSockets gives f duplicates of the descriptors of its *net.TCPConns
// and closes them, which takes the sockets out of package net's poller: the
// loop's epoll set is then the only one that wakes for them. A side that f
// owns already (StartFd) is left as it is. It reports false, having changed
// nothing, when a duplicate cannot be made.
func takeSockets(f *flow) bool {
	var fds [2]int
	for side, c := range [2]*net.TCPConn{f.client, f.upstream} {
		if f.owned[side] {
			continue
		}
		fd, err := dupFd(c)
		if err != nil {
			if side == sideUpstream && !f.owned[sideClient] {
				unix.Close(fds[sideClient])
			}
			return false
		}
		fds[side] = fd
	}
	for side, c := range [2]*net.TCPConn{f.client, f.upstream} {
		if !f.owned[side] {
			f.fds[side], f.owned[side] = fds[side], true
			c.Close()
		}
	}
	return true
}

// dupFd duplicates c's descriptor, close-on-exec; the duplicate shares the
// socket and its non-blocking mode.
func dupFd(c *net.TCPConn) (int, error) {
	fd, err := rawFd(c)
	if err != nil {
		return -1, err
	}
	if fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// adopt returns f's sockets as *net.TCPConns for the plain path: its own
// descriptors go back into package net (which holds duplicates; the
// descriptors are closed), the others are f's conns. When one cannot go
// back (EMFILE), the session fails mid-stream: each socket whose peer's
// stream is cut short (the direction toward it not done) is closed with
// SO_LINGER 0, here or by the caller, as the loop's fail does, the one
// whose duplicate failed before its close inside FileConn.
func adopt(f *flow) (client, upstream *net.TCPConn, err error) {
	conns := [2]*net.TCPConn{f.client, f.upstream}
	for side, own := range f.owned {
		if !own {
			continue
		}
		var failed func(int)
		if !f.dirs[1-side].done {
			failed = lingerZero
		}
		c, ferr := fileConn(f.fds[side], failed)
		if ferr != nil && err == nil {
			err = ferr
		}
		conns[side] = c
	}
	if err != nil {
		for side, c := range conns {
			if c == nil {
				continue
			}
			if !f.dirs[1-side].done {
				resetOnClose(c)
			}
			if f.owned[side] {
				c.Close()
			}
		}
		return nil, nil, err
	}
	return conns[0], conns[1], nil
}
