package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWorkersRestartAfterCpusetShrinks: the parent of --workers reads the
// CPUs it may use (tune.CPUs) once, at start, and pins every later restart
// to cpus[i%len(cpus)] from that list. When the cgroup cpuset shrinks while
// it runs (docker update --cpuset-cpus, a CPU manager, hotplug), the kernel
// moves every task onto the CPUs left, but a worker that then dies is
// restarted with sched_setaffinity to a CPU no longer allowed: EINVAL, and
// "cannot restart worker; retrying in a second" for ever, its slot never
// serving again. The parent now reads the CPUs at each start. Needs root
// and a cgroup v1 cpuset hierarchy; it skips without them.
func TestWorkersRestartAfterCpusetShrinks(t *testing.T) {
	const root = "/sys/fs/cgroup/cpuset"
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mems, err := os.ReadFile(filepath.Join(root, "cpuset.mems"))
	if err != nil {
		t.Skipf("no cgroup v1 cpuset: %v", err)
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		t.Skip("needs 2 CPUs")
	}
	dir := filepath.Join(root, fmt.Sprintf("sluice-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cpuset: %v", err)
	}
	var p *workersProc
	t.Cleanup(func() { removeCpuset(t, dir, p) })
	write := func(name, v string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0); err != nil {
			t.Fatalf("%s = %s: %v", name, v, err)
		}
	}
	write("cpuset.mems", strings.TrimSpace(string(mems)))
	write("cpuset.cpus", fmt.Sprintf("%d,%d", cpus[0], cpus[1]))

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p = startWorkersWith(t, ctx, func(cmd *exec.Cmd) {
		// Join the cpuset before exec, so that sluice and its workers
		// start in it.
		args := append([]string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir}, cmd.Args...)
		cmd.Path, cmd.Args = "/bin/sh", args
	}, "--listen", addr, "--workers", "2", "--access-log=false", "--drain-timeout", "1s")
	pids := p.waitLines(t, map[string]int{"worker started": 2, "worker serving": 2})
	// Worker 1 was pinned to cpus[1]; the cpuset loses that CPU, and the
	// kernel moves the worker onto cpus[0].
	write("cpuset.cpus", strconv.Itoa(cpus[0]))
	syscall.Kill(pids[1], syscall.SIGKILL)
	failures := 0
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for done := false; !done; {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatal("sluice --workers ended")
			}
			t.Log(line)
			switch {
			case strings.Contains(line, "worker serving") && strings.Contains(line, "worker=1"):
				done = true
			case strings.Contains(line, "cannot restart worker"):
				if failures++; failures == 3 {
					t.Fatalf("worker 1 not restarted after the cpuset lost CPU %d: %d restarts failed, the last: %s", cpus[1], failures, line)
				}
			}
		case <-timeout.C:
			t.Fatal("no restart within 15 s")
		}
	}
	p.stop(t)
}

// removeCpuset removes the cpuset dir made for a test, whatever the test
// left in it: it kills sluice's parent p (nil when it never started) and
// waits for it, so that no worker starts in the cpuset any more, then kills
// every process left there (the parent's workers) and waits for each to
// exit before it removes the directory.
func removeCpuset(t *testing.T, dir string, p *workersProc) {
	if p != nil {
		p.cmd.Process.Kill()
		go func() {
			for range p.lines {
			}
		}()
		p.cmd.Wait() // an error when the test waited already
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // exited already
		}
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		// Readable once the process has exited, and left the cpuset.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 5000)
		for err == unix.EINTR {
			n, err = unix.Poll(fds, 5000)
		}
		if n != 1 {
			t.Errorf("cleanup: process %d still running 5 s after SIGKILL (%v)", pid, err)
		}
		unix.Close(fd)
	}
	if err := os.Remove(dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// TestStartPinnedRefusedCPU: pinning to a CPU this process may not use
// fails with a *pinError wrapping EINVAL, which a worker's start takes as
// its cue to start the worker unpinned, and starts nothing.
func TestStartPinnedRefusedCPU(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for cpu < 1024 && set.IsSet(cpu) {
		cpu++
	}
	if cpu == 1024 {
		t.Skip("every CPU is allowed")
	}
	cmd := exec.Command("/bin/true")
	err := startPinned(cmd, cpu)
	var pe *pinError
	if !errors.As(err, &pe) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("startPinned to CPU %d, not allowed: %v, want a *pinError with EINVAL", cpu, err)
	}
	if cmd.Process != nil {
		cmd.Wait()
		t.Fatalf("startPinned to CPU %d failed but started a process", cpu)
	}
	// The thread it pinned keeps its affinity: the same start unpinned works.
	if err := startPinned(cmd, -1); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}
