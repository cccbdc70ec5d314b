//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// acceptFd is Linux's, where the relay has event loops to take bare
// sockets; elsewhere clients are accepted by package net.
func acceptFd(syscall.RawConn) (*client, error) {
	return nil, errors.ErrUnsupported
}
