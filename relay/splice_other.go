//go:build !linux

package relay

import "errors"

// spliceHalf reports errors.ErrUnsupported: without splice(2) every
// direction takes the plain path.
func (r *Relay) spliceHalf(h *half) (done bool, err error) {
	return false, errors.ErrUnsupported
}
