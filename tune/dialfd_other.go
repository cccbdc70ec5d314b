//go:build !linux

package tune

import (
	"context"
	"errors"
	"net/netip"
)

// DialFd is Linux's: elsewhere it answers errors.ErrUnsupported, and callers
// dial with Dialer.
func (o *Options) DialFd(context.Context, netip.AddrPort) (int, error) {
	return -1, errors.ErrUnsupported
}

// DialFdYield is Linux's: elsewhere it answers errors.ErrUnsupported, as
// DialFd does.
func (o *Options) DialFdYield(context.Context, netip.AddrPort, func(func())) (int, error) {
	return -1, errors.ErrUnsupported
}

// DialFdLate is Linux's: elsewhere it answers errors.ErrUnsupported, as
// DialFd does.
func (o *Options) DialFdLate(context.Context, netip.AddrPort, func(func())) (int, error) {
	return -1, errors.ErrUnsupported
}

// ArmKeepAlive is Linux's, for DialFdLate's descriptors: elsewhere it
// answers errors.ErrUnsupported.
func (o *Options) ArmKeepAlive(int) error { return errors.ErrUnsupported }
