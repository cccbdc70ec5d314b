package tune

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestRaiseNoFile lowers the soft limit by one first, since Go raised it
// already at start-up. Not parallel: it changes a process-wide limit.
func TestRaiseNoFile(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lower := lim
	lower.Cur = lim.Max - 1
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lower); err != nil {
		t.Fatal(err)
	}
	n, err := RaiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != lim.Max || n != lim.Cur {
		t.Errorf("after RaiseNoFile() = %d: soft %d, hard %d; want all equal", n, lim.Cur, lim.Max)
	}
}
