package tune

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// soft limit, the number of descriptors the process may hold open, and
// whether it changed it. Go already raises it at start-up, so raised is
// false unless something lowered the limit since; RaiseNoFile makes the
// raise explicit and reports the value.
func RaiseNoFile() (soft uint64, raised bool, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false, fmt.Errorf("tune: getrlimit RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur == lim.Max {
		return lim.Cur, false, nil
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false, fmt.Errorf("tune: setrlimit RLIMIT_NOFILE: %w", err)
	}
	return lim.Cur, true, nil
}
