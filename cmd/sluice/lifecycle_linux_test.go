package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestLifecycleWorkersHUPWhileStarting: a SIGHUP that reaches the parent of
// --workers while it starts is held for each worker until that worker
// serves, then applied there, as sluice without --workers does. The parent
// used to forward it at once to workers just exec'd, before their Go
// runtime had set up a handler, and Go's default for SIGHUP killed them
// ("worker died; restarting" err="signal: hangup"), the reload lost; a
// SIGHUP during a worker's restart did the same. Here the parent gets the
// signal while it resolves its --listen name (the DNS server holds that
// query), so that it is queued when the workers start.
func TestLifecycleWorkersHUPWhileStarting(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	dns, asked := stallDNS(t, release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkersWith(t, ctx, func(cmd *exec.Cmd) { cmd.Env = append(cmd.Env, stallDNSEnv+"="+dns) },
		"--listen", fmt.Sprintf("stalled.example:%d", freePort(t)), "--workers", "2", "--access-log=false", "--drain-timeout", "1s")
	select {
	case <-asked: // the parent runs, its SIGHUP handler set up before it parsed its flags
	case <-ctx.Done():
		t.Fatal("no DNS query for the --listen name")
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	close(release)
	reloaded := 0
	var log []string
	for reloaded < 2 {
		l, ok := <-p.lines
		if !ok {
			t.Fatalf("sluice --workers ended; log:\n%s", strings.Join(log, "\n"))
		}
		log = append(log, l)
		if strings.Contains(l, "worker died") {
			t.Fatalf("a worker died of the SIGHUP sent while sluice started: %s\nlog:\n%s", l, strings.Join(log, "\n"))
		}
		if strings.Contains(l, "configuration reloaded") {
			reloaded++
		}
	}
	p.stop(t)
}

// TestLifecycleWorkersHungDrainKilled: a worker that has not exited
// --drain-timeout plus 5 s after the parent's SIGTERM (stopped here with
// SIGSTOP) is killed with one error line, reaped before the parent exits,
// and the parent exits 1, not 0: a worker that outlived its own drain
// timeout is a fault that a service manager should see. The parent used to
// kill it silently, exit 0 and leave it unreaped.
func TestLifecycleWorkersHungDrainKilled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--workers", "1",
		"--access-log=false", "--drain-timeout", "1s")
	defer p.cmd.Process.Kill()
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	w := findWorker(t, pids[0])
	if err := w.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	var log []string
	for l := range p.lines {
		log = append(log, l)
	}
	err := p.cmd.Wait()
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("parent with a worker hung in its drain: %v, want exit status 1", err)
	}
	if !containsLine(log, "level=ERROR", "killing") {
		t.Errorf("no error line says that the hung worker is killed; log:\n%s", strings.Join(log, "\n"))
	}
	if err := w.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("worker %d after its parent exited: signal 0: %v, want it killed and reaped", pids[0], err)
	}
}

// TestLifecycleWorkersNoStrayFDs: a worker inherits no descriptor that
// its parent inherited from whatever started it (a shell's redirection, a
// supervisor's pipe), which Go leaves open across exec: only stdin,
// stdout, stderr and its status pipe. The parent is started here with two
// extra descriptors, its 3 and 4; a worker's 3 is its status pipe, and its
// 4 used to be the parent's.
func TestLifecycleWorkersNoStrayFDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var markers []*os.File
	for i := range 2 {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("stray%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		markers = append(markers, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkersWith(t, ctx, func(cmd *exec.Cmd) { cmd.ExtraFiles = markers },
		"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--workers", "1", "--access-log=false", "--drain-timeout", "1s")
	defer p.cmd.Process.Kill()
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pids[0], fd.Name()))
		if strings.HasPrefix(target, dir) {
			t.Errorf("worker's descriptor %s is %s, its parent's inherited one", fd.Name(), target)
		}
	}
	p.stop(t)
}

// TestLifecycleWorkersReloadWorkersKey: a reload whose file changes
// `workers` logs that the key needs a restart, as every other such key is.
// Nobody did: a worker runs with --workers=0 on its command line, which
// wins over its file, and the parent did not compare.
func TestLifecycleWorkersReloadWorkersKey(t *testing.T) {
	t.Parallel()
	conf := func(n int) string {
		return fmt.Sprintf("workers = %d\naccess-log = false\ndrain-timeout = \"1s\"\n", n)
	}
	cfgPath := writeConfig(t, conf(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--config", cfgPath, "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	defer p.cmd.Process.Kill()
	p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	if err := os.WriteFile(cfgPath, []byte(conf(3)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	// The parent reads the file on the goroutine that logs this line and
	// handles its SIGTERM after it.
	p.waitLines(t, map[string]int{"forwarding SIGHUP to workers": 1})
	p.cmd.Process.Signal(syscall.SIGTERM)
	var log []string
	for l := range p.lines {
		log = append(log, l)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("parent after SIGTERM: %v, want exit 0", err)
	}
	if !containsLine(log, "needs a restart", "key=workers", "running=1", "file=3") {
		t.Errorf("no line says that workers (1 running, 3 in the file) needs a restart; log:\n%s", strings.Join(log, "\n"))
	}
}

// TestLifecycleSIGHUPStorm: 100 SIGHUPs in a row, then a changed file and
// one more: the reload of that file applies (its deny rule holds), no
// worker dies, and the process that serves is back to its goroutines and
// descriptors of before the storm. Without and with --workers (the parent
// forwards each signal).
func TestLifecycleSIGHUPStorm(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	for _, workers := range []bool{false, true} {
		t.Run(fmt.Sprintf("workers=%v", workers), func(t *testing.T) {
			t.Parallel()
			cfgPath := writeConfig(t, "access-log = false\n")
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			debug := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			args := []string{"--config", cfgPath, "--listen", addr, "--debug-addr", debug, "--drain-timeout", "1s"}
			if workers {
				args = append(args, "--workers", "1")
			}
			p := startProc(t, args...)
			p.waitLine(t, "debug server listening")
			pid := p.cmd.Process.Pid
			if workers {
				pid = workerPid(t, p.cmd.Process.Pid)
			}
			g0, f0 := goroutines(t, debug), openFDs(t, pid)
			for range 100 {
				p.cmd.Process.Signal(syscall.SIGHUP)
			}
			deny := fmt.Sprintf("access-log = false\n[[rule]]\naction = \"deny\"\ncidr = [\"127.0.0.1\"]\nports = [\"%d\"]\n", echo.Addr().(*net.TCPAddr).Port)
			if err := os.WriteFile(cfgPath, []byte(deny), 0o600); err != nil {
				t.Fatal(err)
			}
			p.cmd.Process.Signal(syscall.SIGHUP)
			for {
				l := p.waitLine(t, "configuration reloaded")
				if strings.Contains(l, "rules=1") {
					break
				}
			}
			d, _ := proxy.SOCKS5("tcp", addr, nil, nil)
			if c, err := d.Dial("tcp", echo.Addr().String()); err == nil {
				c.Close()
				t.Error("a connection to the target that the last reload denies was relayed")
			} else if !strings.Contains(err.Error(), "not allowed") {
				t.Errorf("a connection to the denied target: %v, want not allowed", err)
			}
			var g, f int
			if !waitFor(10*time.Second, func() bool {
				g, f = goroutines(t, debug), openFDs(t, pid)
				return g <= g0 && f <= f0
			}) {
				t.Errorf("after 101 reloads: %d goroutines and %d descriptors, %d and %d before", g, f, g0, f0)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			var log []string
			for l := range p.lines {
				log = append(log, l)
			}
			if err := <-p.done; err != nil {
				t.Errorf("exit after SIGTERM: %v, want 0", err)
			}
			if containsLine(log, "worker died") || containsLine(log, "reload failed") {
				t.Errorf("a worker died or a reload failed; log:\n%s", strings.Join(log, "\n"))
			}
		})
	}
}

// TestLifecycleReloadUsersBroken: a reload that finds the users file gone,
// or empty (truncated by a writer that has not written it yet), keeps the
// running users with one error line each, and nothing else logged.
func TestLifecycleReloadUsersBroken(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	users := writeUsers(t, "alice:a\n")
	p := startProc(t, "--users", users, "--listen", "127.0.0.1:0", "--listeners", "1", "--access-log=false", "--drain-timeout", "1s")
	for _, tc := range []struct {
		name, want string
		spoil      func() error
	}{
		{"gone", "no such file", func() error { return os.Remove(users) }},
		{"empty", "no users in file", func() error { return os.WriteFile(users, nil, 0o600) }},
	} {
		if err := tc.spoil(); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		l := p.waitLine(t, "level=")
		if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "reload failed; keeping the running configuration") || !strings.Contains(l, tc.want) {
			t.Errorf("users file %s: the line after SIGHUP is %s; want the reload's error, %q", tc.name, l, tc.want)
		}
		if err := serveOneEcho(p.addr, echo, "alice", "a", 5*time.Second); err != nil {
			t.Errorf("alice after a reload with the users file %s: %v", tc.name, err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	var log []string
	for l := range p.lines {
		log = append(log, l)
	}
	if err := <-p.done; err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", err)
	}
	for _, l := range log {
		if !strings.Contains(l, "level=INFO") {
			t.Errorf("a line past the two reloads' errors: %s", l)
		}
	}
}

// TestLifecycleExitCodes: a flag error is exit status 2, a configuration
// that cannot start 1, and a stop on SIGTERM 0, with and without
// --workers.
func TestLifecycleExitCodes(t *testing.T) {
	t.Parallel()
	gone := filepath.Join(t.TempDir(), "gone")
	for _, workers := range [][]string{nil, {"--workers", "1"}} {
		listen := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--drain-timeout", "1s"}
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"--no-such-flag"}, 2},
			{[]string{"--users", gone}, 1},
		} {
			args := append(append(append([]string(nil), listen...), workers...), tc.args...)
			if code, out, _ := runExit(10*time.Second, args...); code != tc.code {
				t.Errorf("sluice %q: exit %d, want %d; stderr:\n%s", args, code, tc.code, out)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
		defer cancel()
		p := startWorkers(t, ctx, append(listen, workers...)...)
		p.waitLines(t, map[string]int{"sluice listening": 1})
		p.stop(t) // exit 0
	}
}

// startWorkersWith is startWorkers with setup applied to the command
// before it starts.
func startWorkersWith(t *testing.T, ctx context.Context, setup func(*exec.Cmd), args ...string) *workersProc {
	t.Helper()
	p := &workersProc{cmd: sluiceCmd(ctx, args...), lines: make(chan string, 100)}
	setup(p.cmd)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// stallDNS serves DNS on a loopback socket: the first query is held, told
// on asked, and answered once release is closed, with 127.0.0.1 as every
// later query is.
func stallDNS(t *testing.T, release <-chan struct{}) (addr string, asked <-chan struct{}) {
	t.Helper()
	ask := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	addr = dnsServer(t, func(pc net.PacketConn) {
		b := make([]byte, 1500)
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			return
		}
		close(ask)
		select {
		case <-release:
		case <-done:
			return
		}
		serveFixed(&replayPacketConn{PacketConn: pc, first: b[:n], from: from}, [4]byte{127, 0, 0, 1}, nil)
	})
	return addr, ask
}

// replayPacketConn reads first, from from, before what its PacketConn
// receives.
type replayPacketConn struct {
	net.PacketConn
	first []byte
	from  net.Addr
}

func (c *replayPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.first != nil {
		n := copy(b, c.first)
		c.first = nil
		return n, c.from, nil
	}
	return c.PacketConn.ReadFrom(b)
}

// findWorker returns a handle on process pid, a worker known to run: on
// Linux it holds a pidfd, so that it never signals another process that
// reuses the pid. The test's end kills it, if it still runs.
func findWorker(t *testing.T, pid int) *os.Process {
	t.Helper()
	w, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Kill(); w.Release() })
	return w
}

// workerPid returns the pid of the one child of process parent.
func workerPid(t *testing.T, parent int) int {
	t.Helper()
	// Each of the parent's threads lists the children it forked.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", parent))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", parent, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if pid != 0 {
				t.Fatalf("process %d has more than one child", parent)
			}
			pid, _ = strconv.Atoi(f)
		}
	}
	if pid == 0 {
		t.Fatalf("process %d has no child", parent)
	}
	findWorker(t, pid)
	return pid
}

// goroutines returns the goroutine count of the process that serves
// /debug/pprof/ on addr.
func goroutines(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	if err != nil {
		t.Fatalf("goroutine profile of %s starts %q", addr, line)
	}
	return n
}

// openFDs returns the number of descriptors process pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// containsLine reports whether a line of log contains every one of want.
func containsLine(log []string, want ...string) bool {
	for _, l := range log {
		all := true
		for _, w := range want {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}
