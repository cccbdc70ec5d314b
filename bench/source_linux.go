package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// allPorts is IP_LOCAL_PORT_RANGE's value for 1-65535, which Linux (6.3 and
// later) reads as the whole of net.ipv4.ip_local_port_range: the low port
// in the lower 16 bits, the high one in the upper, as a C int's bits.
const allPorts = int(int32(-1<<16 | 1))

// dialControl returns the Control function of a client socket, nil when it
// has nothing to set. noPort sets IP_BIND_ADDRESS_NO_PORT, so that binding
// a source address leaves the port to connect, which may then share a port
// across destinations instead of taking one of its own at bind time.
// allPorts sets IP_LOCAL_PORT_RANGE to the whole system range (see
// Proxy.AllPorts); older kernels refuse it, and connect then searches as
// before.
func dialControl(noPort, all bool) func(network, address string, c syscall.RawConn) error {
	if !noPort && !all {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			if noPort {
				err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}
			if all && err == nil {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, allPorts)
			}
		}); cerr != nil {
			return cerr
		}
		return err
	}
}
