package tune

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// keepAliveBySockopt: on Linux tune sets keepalive itself, on the listener
// (accepted sockets inherit it) and before connect, instead of letting
// package net set it again on every new connection.
const keepAliveBySockopt = true

// setOpt sets option id, configured in o or s, on the socket fd.
func setOpt(fd int, id opt, o *Options, s *SockOpts) error {
	switch id {
	case optRecvBuf:
		return setInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, s.RecvBufferBytes)
	case optSendBuf:
		return setInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.SendBufferBytes)
	case optKeepAliveIdle:
		// The idle time first: on a connected socket (ArmKeepAlive),
		// SO_KEEPALIVE starts the timer with the idle time it finds.
		if err := setDuration(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, s.keepAliveIdle(), time.Second); err != nil {
			return err
		}
		return setInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	case optKeepAliveInterval:
		return setDuration(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, s.keepAliveInterval(), time.Second)
	case optKeepAliveCount:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, s.keepAliveCount())
	case optUserTimeout:
		return setDuration(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, s.UserTimeout, time.Millisecond)
	case optCongestion:
		return unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, s.Congestion)
	case optNotSentLowat:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, s.NotSentLowatBytes)
	case optMark:
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(int32(s.Mark)))
	case optNagle:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 0)
	case optQuickAck:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	case optReusePort:
		return setInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	case optFastOpen:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN, o.FastOpenQueue)
	case optDeferAccept:
		return setDuration(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, o.DeferAccept, time.Second)
	case optBacklog:
		// listen on a listening socket only updates its backlog.
		return unix.Listen(fd, min(o.Backlog, math.MaxInt32))
	case optSmartAccept, optSmartConnect:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
	case optFastOpenConnect:
		return setInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1)
	case optInterface:
		return unix.BindToDevice(fd, o.Interface)
	case optSourceAddr:
		return bindAddr(fd, o.SourceAddr)
	case optSourcePorts:
		return rawsys.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, o.SourcePorts.Value())
	}
	return errors.ErrUnsupported
}

// setNoDelay sets TCP_NODELAY.
func setNoDelay(fd int) error {
	if err := rawsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return os.NewSyscallError("setsockopt TCP_NODELAY", err)
	}
	return nil
}

// setInt sets an int option, refusing what a C int cannot hold rather than
// letting it wrap.
func setInt(fd, level, name, v int) error {
	if v < math.MinInt32 || v > math.MaxInt32 {
		return unix.EINVAL
	}
	return rawsys.SetsockoptInt(fd, level, name, v)
}

// setDuration sets an option that counts whole units of time (seconds for
// keepalive and defer-accept, milliseconds for TCP_USER_TIMEOUT), rounding d
// up, so that a positive d never becomes 0 (off), and refusing what a C int
// cannot hold, before int, which has 32 bits on some platforms, could wrap it.
func setDuration(fd, level, name int, d, unit time.Duration) error {
	n := d / unit
	if d%unit > 0 {
		n++
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return unix.EINVAL
	}
	return rawsys.SetsockoptInt(fd, level, name, int(n))
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT (Linux 4.2 and later) on a socket
// about to be bound to a source address and connected: bind then leaves the
// port to connect, which picks it by the whole 4-tuple. Without it, bind
// reserves a port of its own for the source address, and all of a relay's
// upstream connections together get one ephemeral range instead of one per
// destination. Best effort: where the kernel lacks it, bind picks the port.
func bindNoPort(fd int) {
	rawsys.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

func bindAddr(fd int, a netip.Addr) error {
	if a.Is4() || a.Is4In6() {
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: a.Unmap().As4()})
	}
	sa := &unix.SockaddrInet6{Addr: a.As16()}
	if z := a.Zone(); z != "" {
		id, err := rawsys.ZoneIndex(z)
		if err != nil {
			return err
		}
		sa.ZoneId = id
	}
	return unix.Bind(fd, sa)
}

// probeOpt tries id alone on a fresh socket: unbound, or bound to loopback
// and listening where the option needs it. Where that scaffolding's own bind
// or listen fails (every ephemeral port of loopback in use, say), the option
// cannot be tried, and probeOpt keeps it: Listen, on its configured address,
// still fails with an *OptionError should the kernel refuse it there. The
// source address is bound as the dial binds it, with
// IP_BIND_ADDRESS_NO_PORT, so that a bind from an address whose ephemeral
// ports are all in use (TIME_WAITs, connections) is not taken for a refusal
// of the address: connect picks a port by the whole 4-tuple.
func probeOpt(id opt, o *Options, s *SockOpts) error {
	family := unix.AF_INET
	if id == optSourceAddr && !o.SourceAddr.Unmap().Is4() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch id {
	case optFastOpen, optFastOpenConnect:
		if err := fastOpenEnabled(id); err != nil {
			return err
		}
	case optBacklog, optSmartAccept:
		if unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}) != nil || unix.Listen(fd, 1) != nil {
			return nil // could not probe: kept
		}
	case optSourceAddr:
		bindNoPort(fd)
	}
	if err := setOpt(fd, id, o, s); err != nil {
		return err
	}
	return clamped(fd, id, o, s)
}

// clamped reads back the options the kernel lowers without an error.
func clamped(fd int, id opt, o *Options, s *SockOpts) error {
	switch id {
	case optRecvBuf, optSendBuf:
		name, want, limit := unix.SO_RCVBUF, s.RecvBufferBytes, "net.core.rmem_max"
		if id == optSendBuf {
			name, want, limit = unix.SO_SNDBUF, s.SendBufferBytes, "net.core.wmem_max"
		}
		got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, name)
		if err != nil {
			return err
		}
		if got/2 < want { // the kernel doubles the value it keeps
			return fmt.Errorf("%w to %d bytes (%s)", ErrClamped, got/2, limit)
		}
	case optSourcePorts:
		if o.SourcePorts == AllPorts {
			return nil
		}
		lo, hi, err := systemPortRange()
		if err != nil {
			return err
		}
		if r := o.SourcePorts; r.Low < lo || r.High > hi {
			return fmt.Errorf("%w: outside net.ipv4.ip_local_port_range (%d-%d), whose bound the kernel uses instead", ErrClamped, lo, hi)
		}
	case optFastOpen:
		got, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN)
		if err != nil {
			return err
		}
		if got < o.FastOpenQueue {
			return fmt.Errorf("%w to %d (net.core.somaxconn)", ErrClamped, got)
		}
	case optDeferAccept:
		// The kernel keeps a count of SYN-ACK retransmissions, which it
		// reads back as the seconds they take (a value rounded up), at
		// most 255 of them: 29,887 s.
		got, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
		if err != nil {
			return err
		}
		if time.Duration(got)*time.Second < o.DeferAccept {
			return fmt.Errorf("%w to %d s (the kernel's longest)", ErrClamped, got)
		}
	case optBacklog:
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		if int(info.Sacked) < o.Backlog { // a listener's tcpi_sacked is its backlog
			return fmt.Errorf("%w to %d (net.core.somaxconn)", ErrClamped, info.Sacked)
		}
	}
	return nil
}

// systemPortRange reads net.ipv4.ip_local_port_range.
func systemPortRange() (lo, hi uint16, err error) {
	const sysctl = "/proc/sys/net/ipv4/ip_local_port_range"
	b, err := os.ReadFile(sysctl)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		l, err1 := strconv.ParseUint(f[0], 10, 16)
		h, err2 := strconv.ParseUint(f[1], 10, 16)
		if err1 == nil && err2 == nil {
			return uint16(l), uint16(h), nil
		}
	}
	return 0, 0, fmt.Errorf("%s: unexpected %q", sysctl, b)
}

// fastOpenEnabled checks net.ipv4.tcp_fastopen, without which TCP_FASTOPEN
// and TCP_FASTOPEN_CONNECT are accepted but do nothing: the bit 0x1 enables
// the client side, 0x2 the server side.
func fastOpenEnabled(id opt) error {
	const sysctl = "/proc/sys/net/ipv4/tcp_fastopen"
	b, err := os.ReadFile(sysctl)
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s: %w", sysctl, err)
	}
	bit, side := 0x1, "client"
	if id == optFastOpen {
		bit, side = 0x2, "server"
	}
	if v&bit == 0 {
		return fmt.Errorf("disabled by net.ipv4.tcp_fastopen=%d (needs the %s bit, %#x)", v, side, bit)
	}
	return nil
}
