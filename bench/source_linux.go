package bench

import (
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/tune"
)

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
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, tune.AllPorts.Value())
			}
		}); cerr != nil {
			return cerr
		}
		return err
	}
}
