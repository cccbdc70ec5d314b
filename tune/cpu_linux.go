package tune

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cpuSetSize is the number of CPUs a unix.CPUSet holds, 1024: its bits,
// whatever the width of the words it is made of (32 bits on 386 and arm,
// 64 on amd64 and arm64).
const cpuSetSize = 8 * int(unsafe.Sizeof(unix.CPUSet{}))

// errCPURange is the cause of PinThread's error for a CPU number that no
// unix.CPUSet holds.
var errCPURange = fmt.Errorf("outside the %d CPUs a CPU set holds: %w", cpuSetSize, unix.EINVAL)

// CPUs returns, in ascending order, the CPUs this process may run on, as
// set by taskset or a cgroup cpuset: the affinity (sched_getaffinity) of a
// thread that PinThread did not pin, so it may be called from a pinned one.
func CPUs() ([]int, error) {
	// A new goroutine never runs on a thread locked by PinThread, and the
	// runtime never clones a new thread from a locked one.
	res := make(chan affinity, 1)
	go getAffinity(res)
	a := <-res
	if a.err != nil {
		return nil, fmt.Errorf("tune: sched_getaffinity: %w", a.err)
	}
	cpus := make([]int, 0, a.set.Count())
	for cpu := 0; len(cpus) < cap(cpus); cpu++ {
		if a.set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

type affinity struct {
	set unix.CPUSet
	err error
}

func getAffinity(res chan<- affinity) {
	var a affinity
	a.err = unix.SchedGetaffinity(0, &a.set)
	res <- a
}

// PinThread locks the calling goroutine to its OS thread and pins that
// thread to cpu (sched_setaffinity). Goroutines it starts later are not
// pinned. The lock is kept: when the goroutine returns, the runtime ends the
// thread rather than reuse a pinned one, so do not call
// runtime.UnlockOSThread after PinThread. On error the goroutine is unlocked;
// a cpu outside 0 to 1023, which a unix.CPUSet cannot hold, is refused first,
// with an error that wraps unix.EINVAL.
func PinThread(cpu int) error {
	if cpu < 0 || cpu >= cpuSetSize {
		return fmt.Errorf("tune: pin to CPU %d: %w", cpu, errCPURange)
	}
	var set unix.CPUSet
	set.Set(cpu)
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("tune: pin to CPU %d: %w", cpu, err)
	}
	return nil
}
