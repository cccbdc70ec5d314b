package bench

// Tests of bench/lib.sh, the bench scripts' shared shell functions: each
// runs a short bash script that sources it from the repository root, as
// the scripts do.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// libScript returns a command that runs script in bash after sourcing
// lib.sh, in the repository root, with PATH set to path when not empty.
func libScript(t *testing.T, path, script string) *exec.Cmd {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("the bench scripts need bash: %v", err)
	}
	cmd := exec.Command(bash, "-c", ". bench/lib.sh\n"+script, "libsh-test")
	cmd.Dir = ".."
	cmd.Env = os.Environ()
	if path != "" {
		cmd.Env = append(cmd.Env, "PATH="+path)
	}
	return cmd
}

// freePort returns a loopback port that nothing listens on (one a listener
// just gave back).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestLibWaitPortProcessGone: wait_port ends as soon as the process that
// should listen is gone, naming it, its exit status and the port, with its
// log; before, it waited its whole 30 s and said only that nothing
// listened.
func TestLibWaitPortProcessGone(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	var stderr bytes.Buffer
	cmd := libScript(t, "", fmt.Sprintf(`
start quitter sh -c 'echo "quitter: no such flag" >&2; exit 3'
wait_port %d quitter
echo "wait_port returned"`, port))
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("script: %v, stderr %q; want exit 1", err, stderr.String())
	}
	want := fmt.Sprintf(") exited (status 3) before anything listened on 127.0.0.1:%d", port)
	if !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "quitter: no such flag") {
		t.Errorf("stderr %q; want the process's log and %q", stderr.String(), want)
	}
}

// TestLibWaitPortListening: with the named process alive and something
// listening, wait_port returns 0.
func TestLibWaitPortListening(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := libScript(t, "", fmt.Sprintf(`
start holder sleep 1000
wait_port %d holder
echo ok`, ln.Addr().(*net.TCPAddr).Port))
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("script: %v, output %q; want ok", err, out)
	}
}

// TestLibKillTreeWithoutProcps: kill_tree stops a process's children too on
// a machine without procps (no pgrep, no ps), here a PATH that has neither;
// before, it found no children without pgrep and left them running.
func TestLibKillTreeWithoutProcps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// What lib.sh and the script below run, and nothing else.
	for _, name := range []string{"bash", "basename", "id", "mktemp", "rm", "rmdir", "sleep", "tail"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The tree: a bash that starts two sleeps and waits for them. Each
	// sleep's PID goes to the test on fd 3 (the script's stdout), and so
	// does the tree's; the script then waits for a line on stdin before
	// kill_tree.
	cmd := libScript(t, dir, `
if command -v pgrep || command -v ps; then echo "procps on PATH"; exit 1; fi
exec 3>&1
start tree bash -c 'sleep 1000 3>&- & echo "$!" >&3; sleep 1000 3>&- & echo "$!" >&3; exec 3>&-; wait'
exec 3>&-
echo "tree $started_pid"
read -r _
kill_tree "$started_pid"
forget "$started_pid"
echo killed`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	// The sleeps' PIDs and the tree's line come in either order.
	lines := bufio.NewScanner(stdout)
	var sleeps []int
	tree := false
	for (len(sleeps) < 2 || !tree) && lines.Scan() {
		if strings.HasPrefix(lines.Text(), "tree ") {
			tree = true
			continue
		}
		pid, err := strconv.Atoi(lines.Text())
		if err != nil {
			t.Fatalf("script said %q, want a PID; stderr %q", lines.Text(), stderr.String())
		}
		sleeps = append(sleeps, pid)
	}
	if len(sleeps) < 2 || !tree {
		t.Fatalf("script: PIDs %v, tree line %v, stderr %q; want two PIDs and the tree's", sleeps, tree, stderr.String())
	}
	// Pidfds, opened while the sleeps surely run (the tree waits for
	// them), name these processes whatever their PIDs later become.
	pidfds := make([]int, len(sleeps))
	for i, pid := range sleeps {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open %d: %v", pid, err)
		}
		pidfds[i] = fd
		defer unix.Close(fd)
		// A sleep left running by a failure is stopped here.
		defer unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "killed" {
		t.Fatalf("script: %q, stderr %q; want killed", lines.Text(), stderr.String())
	}
	// A pidfd reads as ready once its process has ended; 10 s is only a
	// safety net, the signal having been sent before "killed".
	for i, fd := range pidfds {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 10000)
		for err == unix.EINTR {
			n, err = unix.Poll(p, 10000)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("child %d of the tree still runs after kill_tree", sleeps[i])
		}
	}
}
