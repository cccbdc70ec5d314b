//go:build !linux

package bench

import "syscall"

// dialControl sets nothing where IP_BIND_ADDRESS_NO_PORT and
// IP_LOCAL_PORT_RANGE do not exist: the port is then taken at bind time,
// and connect searches as it always does.
func dialControl(_, _ bool) func(network, address string, c syscall.RawConn) error { return nil }
