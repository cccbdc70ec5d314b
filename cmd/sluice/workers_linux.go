package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// startPinned starts cmd with its CPU affinity set to cpu (when cpu >= 0).
// A child inherits the affinity of the thread that forks it, so this thread
// is pinned for the fork and restored after: every thread of the child,
// the Go runtime's included, then runs on cpu only. It returns a *pinError
// when it cannot pin the thread (nothing started; EINVAL: cpu is not one
// this process may use), and a *unpinError when the process started but
// the thread's affinity could not be restored.
//
// The worker gets SIGTERM (and drains) when the parent dies, even by
// SIGKILL, rather than serve on as an orphan beside the workers of the next
// parent. The kernel sends it when the forking thread ends, which a Go
// thread does only with the process (a worker so ended would be restarted).
func startPinned(cmd *exec.Cmd, cpu int) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if cpu < 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return &pinError{cpu, err}
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return &pinError{cpu, err}
	}
	err := cmd.Start()
	rerr := restoreAffinity(&old)
	switch {
	case err != nil && rerr != nil:
		return fmt.Errorf("%w (and restore CPU affinity: %v)", err, rerr)
	case err != nil:
		return err
	case rerr != nil:
		// The worker runs. This thread, still on cpu alone, stays locked
		// to the calling goroutine rather than go back to the runtime,
		// which would run any goroutine on it.
		runtime.LockOSThread()
		return &unpinError{rerr}
	}
	return nil
}

// restoreAffinity sets this thread's affinity back to old or, where the
// cpuset no longer holds any CPU of old (it shrank during the start), to
// every CPU it may use: the kernel keeps those of a mask that it allows.
func restoreAffinity(old *unix.CPUSet) error {
	err := unix.SchedSetaffinity(0, old)
	if err == nil {
		return nil
	}
	var all unix.CPUSet
	for i := range all {
		all[i] = ^all[i]
	}
	if unix.SchedSetaffinity(0, &all) == nil {
		return nil
	}
	return err
}

// closeInheritedOnExec marks every descriptor past stderr close-on-exec, so
// that a worker gets no descriptor that this process inherited (a shell's
// redirection, a supervisor's pipe or lock): Go opens its own close-on-exec
// but leaves those open across exec, to every worker, which would hold
// them past this process's death. A worker's status pipe is passed in
// ExtraFiles, which exec duplicates onto descriptor 3 whatever its flag.
func closeInheritedOnExec() error {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return nil
	}
	// Before Linux 5.11, or close_range filtered out (seccomp): one at a
	// time.
	fds, err := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if n, err := strconv.Atoi(fd.Name()); err == nil && n > 2 {
			unix.CloseOnExec(n)
		}
	}
	return err
}
