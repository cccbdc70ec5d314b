//go:build !linux

package tune

import "errors"

// CPUs returns errors.ErrUnsupported outside Linux.
func CPUs() ([]int, error) { return nil, errors.ErrUnsupported }

// PinThread returns errors.ErrUnsupported outside Linux.
func PinThread(cpu int) error { return errors.ErrUnsupported }
