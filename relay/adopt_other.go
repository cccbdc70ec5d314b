//go:build !linux

package relay

import "net"

// adoptFd is fileConn: only Linux hands the relay bare descriptors.
func adoptFd(fd int) (*net.TCPConn, error) { return fileConn(fd) }
