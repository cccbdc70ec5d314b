//go:build unix

package bench

import (
	"syscall"
	"time"
)

// selfCPU returns the user plus system time this process has used, all its
// threads together.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
