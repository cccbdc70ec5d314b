//go:build !linux

package tune

import "errors"

// RaiseNoFile returns errors.ErrUnsupported outside Linux.
func RaiseNoFile() (soft uint64, raised bool, err error) { return 0, false, errors.ErrUnsupported }
