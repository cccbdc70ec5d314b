//go:build !linux

package bench

import "errors"

// SampleProc reads a process's resource use; it needs Linux's /proc.
func SampleProc(pid int) (ProcSample, error) {
	return ProcSample{}, errors.ErrUnsupported
}
