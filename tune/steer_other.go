//go:build !linux

package tune

import (
	"errors"
	"net"
)

// AttachCPUSteering returns errors.ErrUnsupported outside Linux.
func AttachCPUSteering(ls []*net.TCPListener) error { return errors.ErrUnsupported }
