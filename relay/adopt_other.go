//go:build !linux

package relay

import "net"

// FileConn wraps a TCP socket's bare descriptor in a *net.TCPConn, which
// holds a duplicate, and closes the descriptor (net.FileConn).
func FileConn(fd int) (*net.TCPConn, error) { return wrapFd(fd, nil) }

// fileConn is FileConn; failed is wrapFd's.
func fileConn(fd int, failed func(fd int)) (*net.TCPConn, error) { return wrapFd(fd, failed) }
