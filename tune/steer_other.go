//go:build !linux

package tune

import (
	"errors"
	"net"
)

// AttachCPUSteering returns errors.ErrUnsupported outside Linux.
func AttachCPUSteering(ls []*net.TCPListener, cpus []int) error { return errors.ErrUnsupported }
