//go:build !linux

package tune

import "errors"

// RaiseNoFile returns errors.ErrUnsupported outside Linux.
func RaiseNoFile() (uint64, error) { return 0, errors.ErrUnsupported }
