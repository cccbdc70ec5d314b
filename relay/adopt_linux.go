package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// FileConn wraps a TCP socket's bare descriptor in a *net.TCPConn, which
// holds a duplicate, and closes the descriptor: for the plain path of a
// session that StartFds took, or a caller's socket that needs package net
// after all. Package net sets TCP_NODELAY and its keepalive defaults on
// every socket it adopts (net.FileConn); the socket keeps the values it had
// instead (its listener's or dialler's options).
func FileConn(fd int) (*net.TCPConn, error) {
	kept := saveOpts(fd)
	tc, err := wrapFd(fd)
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
