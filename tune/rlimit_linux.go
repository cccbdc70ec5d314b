package tune

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// new soft limit, the number of descriptors the process may hold open. Go
// already does this at start-up; RaiseNoFile makes it explicit and reports
// the value.
func RaiseNoFile() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("tune: getrlimit RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur == lim.Max {
		return lim.Cur, nil
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("tune: setrlimit RLIMIT_NOFILE: %w", err)
	}
	return lim.Cur, nil
}
