package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenSockets counts the TCP sockets in LISTEN state on port, from the
// tcp and tcp6 tables of /proc (what `ss -ltn` reads). It reads them through
// /proc/thread-self on a locked thread: /proc/net shows the network namespace
// of the process's main thread, which a test that enters a namespace on a
// locked thread (TestHalfOpenTarget) may have moved.
func listenSockets(t *testing.T, port int) int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n := 0
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is HEXIP:HEXPORT; state 0A is LISTEN.
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
				n++
			}
		}
	}
	return n
}

// TestListenersSpread starts sluice with --listeners 4: the kernel shows four
// listening sockets on the port, and connections are spread over all four
// accept loops.
func TestListenersSpread(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	addr, inst := startSluice(t, "--listeners", "4")
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	if n := listenSockets(t, port); n != 4 {
		t.Fatalf("%d sockets listen on port %d, want 4", n, port)
	}
	for range 200 {
		c := connectRaw(t, addr, echo.Addr().(*net.TCPAddr))
		mustWrite(t, c, []byte("x"))
		expect(t, c, []byte("x"))
		c.Close()
	}
	for i := range inst.accepted {
		if n := inst.accepted[i].Load(); n == 0 {
			t.Errorf("listener %d accepted no connection of 200", i)
		}
	}
}

// freePort returns a loopback TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWorkers runs --workers 2: two processes listen on one port, a killed
// worker is restarted, and SIGTERM to the parent stops them all.
func TestWorkers(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := sluiceCmd(ctx, "--listen", addr, "--workers", "2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// waitLines reads stderr until each key has been seen in as many lines
	// as its count, and returns the pid= fields of "worker started" lines.
	waitLines := func(want map[string]int) (pids []int) {
		t.Helper()
		for line := range lines {
			for k := range want {
				if !strings.Contains(line, k) {
					continue
				}
				if want[k]--; want[k] == 0 {
					delete(want, k)
				}
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "pid="); ok && k == "worker started" {
						pid, _ := strconv.Atoi(v)
						pids = append(pids, pid)
					}
				}
			}
			if len(want) == 0 {
				return pids
			}
		}
		cmd.Process.Kill()
		t.Fatalf("sluice --workers ended before logging %v", want)
		return nil
	}
	pids := waitLines(map[string]int{"worker started": 2, "sluice listening": 2})
	if n := listenSockets(t, port); n != 2 {
		t.Errorf("%d sockets listen on port %d, want 2 (one per worker)", n, port)
	}
	c := connectRaw(t, addr, echo.Addr().(*net.TCPAddr))
	mustWrite(t, c, []byte("via a worker"))
	expect(t, c, []byte("via a worker"))
	c.Close()

	syscall.Kill(pids[0], syscall.SIGKILL)
	restarted := waitLines(map[string]int{"worker died": 1, "worker started": 1, "sluice listening": 1})
	if restarted[0] == pids[0] || restarted[0] == 0 {
		t.Fatalf("restarted worker pid %d (killed %d)", restarted[0], pids[0])
	}
	if n := listenSockets(t, port); n != 2 {
		t.Errorf("after restart %d sockets listen on port %d, want 2", n, port)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for range lines {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("parent after SIGTERM: %v, want exit 0", err)
	}
	if n := listenSockets(t, port); n != 0 {
		t.Errorf("%d sockets still listen on port %d after SIGTERM", n, port)
	}
}
