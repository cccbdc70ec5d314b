//go:build unix

package main

import "syscall"

// peek reads what a socket has received into b without consuming it or
// blocking: syscall.EAGAIN when there is nothing, 0 at EOF.
func peek(fd uintptr, b []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
