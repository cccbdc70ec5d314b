package main

import (
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
// the Go runtime's included, then runs on cpu only.
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
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return err
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); err == nil {
		err = rerr
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
