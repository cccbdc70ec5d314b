//go:build !linux

package main

import "errors"

// waiter is Linux's (waiter_linux.go), for bare client sockets, which only
// Linux has; elsewhere there is none and clients wait in package net.
type waiter struct{}

func newWaiter() (*waiter, error) { return nil, nil }

func (w *waiter) wait(*client, bool) error { return errors.ErrUnsupported }

func (w *waiter) close() {}

func (w *waiter) forget(*client) {}
