//go:build !linux

package main

import (
	"errors"
	"time"
)

// waiter is Linux's (waiter_linux.go), for bare client sockets, which only
// Linux has, and for watching a pending dial's client (epoll); elsewhere
// there is none: clients wait in package net, and a client that leaves
// during its dial holds its session until the dial ends.
type waiter struct{ watchAfter time.Duration }

func newWaiter() (*waiter, error) { return nil, nil }

func (w *waiter) wait(*client, bool) error { return errors.ErrUnsupported }

func (w *waiter) close() {}

func (w *waiter) forget(*client) {}

func (w *waiter) watch(*client, func()) {}

func (w *waiter) unwatch(*client) bool { return false }
