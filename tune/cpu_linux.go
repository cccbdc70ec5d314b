package tune

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// CPUs returns, in ascending order, the CPUs this process may run on: the
// affinity mask of its main thread (sched_getaffinity), as set by taskset or
// a cgroup cpuset.
func CPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(unix.Getpid(), &set); err != nil {
		return nil, fmt.Errorf("tune: sched_getaffinity: %w", err)
	}
	cpus := make([]int, 0, set.Count())
	for cpu := 0; len(cpus) < cap(cpus); cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

// PinThread locks the calling goroutine to its OS thread and pins that
// thread to cpu (sched_setaffinity). Goroutines it starts later are not
// pinned. The lock is kept: when the goroutine returns, the runtime ends the
// thread rather than reuse a pinned one. On error the goroutine is unlocked.
func PinThread(cpu int) error {
	var set unix.CPUSet
	if cpu < 0 || cpu >= len(set)*64 {
		return fmt.Errorf("tune: pin to CPU %d: %w", cpu, unix.EINVAL)
	}
	set.Set(cpu)
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("tune: pin to CPU %d: %w", cpu, err)
	}
	return nil
}
