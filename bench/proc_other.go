//go:build !linux

package bench

import (
	"errors"
	"time"
)

// SampleProc reads a process's resource use; it needs Linux's /proc.
func SampleProc(pid int) (ProcSample, error) {
	return ProcSample{}, errors.ErrUnsupported
}

// machineCPU reports no figure without Linux's /proc/stat.
func machineCPU() (time.Duration, bool) { return 0, false }
