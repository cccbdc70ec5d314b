package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
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

// workersProc is a sluice --workers parent under test, its stderr read line
// by line (the workers write theirs to the same pipe).
type workersProc struct {
	cmd   *exec.Cmd
	lines chan string
}

// startWorkers starts sluice with args (which include --workers) and reads
// its stderr until it ends.
func startWorkers(t *testing.T, ctx context.Context, args ...string) *workersProc {
	t.Helper()
	return startWorkersWith(t, ctx, func(*exec.Cmd) {}, args...)
}

// waitLines reads stderr until each key has been seen in as many lines as
// its count, and returns the pid= fields of "worker started" lines. It fails
// the test after 30 s, or when stderr ends first.
func (p *workersProc) waitLines(t *testing.T, want map[string]int) (pids []int) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		var line string
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.cmd.Process.Kill()
				t.Fatalf("sluice --workers ended before logging %v", want)
			}
			line = l
		case <-timeout.C:
			p.cmd.Process.Kill()
			t.Fatalf("sluice --workers did not log %v within 30 s", want)
		}
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
}

// stop sends SIGTERM to the parent and waits for it to exit 0.
func (p *workersProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.exited(t)
}

// exited waits for the parent, told to stop, to exit 0, reading its stderr
// to the end meanwhile.
func (p *workersProc) exited(t *testing.T) {
	t.Helper()
	go func() {
		for range p.lines {
		}
	}()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("parent after SIGTERM: %v, want exit 0", err)
	}
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
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "2")
	pids := p.waitLines(t, map[string]int{"worker started": 2, "sluice listening": 2})
	if n := listenSockets(t, port); n != 2 {
		t.Errorf("%d sockets listen on port %d, want 2 (one per worker)", n, port)
	}
	c := connectRaw(t, addr, echo.Addr().(*net.TCPAddr))
	mustWrite(t, c, []byte("via a worker"))
	expect(t, c, []byte("via a worker"))
	c.Close()

	syscall.Kill(pids[0], syscall.SIGKILL)
	restarted := p.waitLines(t, map[string]int{"worker died": 1, "worker started": 1, "sluice listening": 1})
	if restarted[0] == pids[0] || restarted[0] == 0 {
		t.Fatalf("restarted worker pid %d (killed %d)", restarted[0], pids[0])
	}
	if n := listenSockets(t, port); n != 2 {
		t.Errorf("after restart %d sockets listen on port %d, want 2", n, port)
	}
	p.stop(t)
	if n := listenSockets(t, port); n != 0 {
		t.Errorf("%d sockets still listen on port %d after SIGTERM", n, port)
	}
}

// TestWorkersReloadSIGHUP: SIGHUP to the parent of --workers 2 reaches both
// workers, each reloads the configuration file, and a rule added there then
// holds for every connection, whichever worker the kernel gives it to.
func TestWorkersReloadSIGHUP(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	target := echo.Addr().(*net.TCPAddr)
	cfgPath := writeConfig(t, "access-log = false\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metrics := freePortPair(t) // worker i serves metrics on this port + i
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := startWorkers(t, ctx, "--config", cfgPath, "--listen", addr, "--workers", "2",
		"--metrics", fmt.Sprintf("127.0.0.1:%d", metrics))
	p.waitLines(t, map[string]int{"worker started": 2, "sluice listening": 2})
	dial := func() (net.Conn, error) {
		d, _ := proxy.SOCKS5("tcp", addr, nil, nil)
		return d.Dial("tcp", target.String())
	}
	c, err := dial()
	if err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	c.Close()

	os.WriteFile(cfgPath, []byte(fmt.Sprintf("access-log = false\n[[rule]]\naction = \"deny\"\ncidr = [\"127.0.0.1\"]\nports = [\"%d\"]\n", target.Port)), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLines(t, map[string]int{"forwarding SIGHUP": 1, "configuration reloaded": 2})
	// SO_REUSEPORT spreads connections over both workers by their ports:
	// 16 connections all miss one worker with probability 2^-15.
	for i := range 16 {
		if c, err := dial(); err == nil {
			c.Close()
			t.Fatalf("connection %d accepted after the reload added a deny rule", i)
		} else if !strings.Contains(err.Error(), "not allowed") {
			t.Fatalf("connection %d: %v, want not allowed", i, err)
		}
	}
	// Each worker counts its own connections on its own metrics port.
	accepted := 0.0
	for i := range 2 {
		mfs := scrape(t, fmt.Sprintf("127.0.0.1:%d", metrics+i))
		accepted += value(mfs, "sluice_connections_accepted_total")
	}
	if accepted != 17 {
		t.Errorf("workers' metrics count %v accepted connections in all; want 17", accepted)
	}
	p.stop(t)
}

// freePortPair returns a port p such that p and p+1 are both free on
// 127.0.0.1 when it returns. It looks below the ephemeral port range: inside
// it, connects take odd ports first, and a busy test run can hold nearly all
// of them in TIME_WAIT.
func freePortPair(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	for range 100 {
		p := freePort(t) // inside the range: only when nothing is below it
		if low >= 2048 {
			p = 1024 + rand.IntN(low-1024-1)
		}
		var ls []net.Listener
		for _, port := range []int{p, p + 1} {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == 2 {
			return p
		}
	}
	t.Fatal("no two consecutive free ports below the ephemeral range in 100 tries")
	return 0
}

// TestWorkersDieWithParent: workers of a parent killed with SIGKILL get
// SIGTERM from the kernel (Pdeathsig) and stop, instead of serving on as
// orphans.
func TestWorkersDieWithParent(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := startWorkers(t, ctx, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2", "--drain-timeout", "1s")
	pids := p.waitLines(t, map[string]int{"worker started": 2, "sluice listening": 2})
	p.cmd.Process.Kill()
	p.cmd.Wait()
	gone := func() bool {
		for _, pid := range pids {
			// Orphans are reparented and reaped by init (or a subreaper);
			// a zombie left unreaped has its listener closed all the same.
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				return false
			}
		}
		return true
	}
	// A thread group leader shows as a zombie while its other threads
	// still exit and hold the descriptors: wait for the listeners too.
	if !waitFor(20*time.Second, func() bool { return gone() && listenSockets(t, port) == 0 }) {
		t.Fatalf("20 s after their parent was killed: workers %v gone: %v; %d sockets listen on port %d",
			pids, gone(), listenSockets(t, port), port)
	}
}

// zombie reports whether process pid has exited and awaits its reaping.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
