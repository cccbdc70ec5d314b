package tune

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPinThreadRange: PinThread refuses a CPU that a unix.CPUSet cannot
// hold, 1024 CPUs on every GOARCH, by its own check; on 386, whose CPU set
// is made of 32-bit words, the check allowed up to 2047 and handed the
// kernel an empty set. The highest CPU a set holds passes the check (and is
// then pinned, or refused by the kernel on a machine without it).
func TestPinThreadRange(t *testing.T) {
	t.Parallel()
	if cpuSetSize != 1024 {
		t.Fatalf("cpuSetSize = %d, want 1024 (_CPU_SETSIZE)", cpuSetSize)
	}
	for _, cpu := range []int{-1, 1024, 2047, 1 << 20} {
		if err := PinThread(cpu); !errors.Is(err, errCPURange) || !errors.Is(err, unix.EINVAL) {
			t.Errorf("PinThread(%d) = %v; want the range error, wrapping EINVAL", cpu, err)
		}
	}
	res := make(chan error, 1)
	go pinReturn(cpuSetSize-1, res) // its thread ends with it, pinned or not
	if err := <-res; errors.Is(err, errCPURange) {
		t.Errorf("PinThread(%d) = %v; want it past the range check", cpuSetSize-1, err)
	}
}

// pinReturn sends what PinThread(cpu) returns.
func pinReturn(cpu int, res chan<- error) { res <- PinThread(cpu) }
