package main

import (
	"os/exec"
	"runtime"
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
