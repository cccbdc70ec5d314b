package tune

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestRaiseNoFile lowers the soft limit by one first, since Go raised it
// already at start-up; a second call, with nothing left to raise, reports
// that it changed nothing. Not parallel: it changes a process-wide limit.
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
	n, raised, err := RaiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != lim.Max || n != lim.Cur || !raised {
		t.Errorf("after RaiseNoFile() = %d, %v: soft %d, hard %d; want all equal, and raised", n, raised, lim.Cur, lim.Max)
	}
	if n, raised, err := RaiseNoFile(); err != nil || n != lim.Max || raised {
		t.Errorf("RaiseNoFile() at the hard limit = %d, %v, %v; want %d, false (nothing changed), nil", n, raised, err, lim.Max)
	}
}
