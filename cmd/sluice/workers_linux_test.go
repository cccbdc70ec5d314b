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
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestWorkersStartupErrors: with --workers, a configuration that cannot
// start stops the parent before it starts a worker, with exit status 1 and
// the one line sluice prints without --workers (the parent used to start
// workers that failed, and restarted them once a second for ever).
func TestWorkersStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	malformed := filepath.Join(dir, "malformed")
	os.WriteFile(malformed, []byte("# ok\nalice:pw\nbob-without-password\n"), 0o600)
	cfgUsers := writeConfig(t, fmt.Sprintf("workers = 1\nusers = %q\n", filepath.Join(dir, "gone")))
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // never bound: no worker starts
	cases := []struct {
		name string
		args []string
		want []string // substrings of the one line
	}{
		{"users-missing", []string{"--workers", "1", "--users", filepath.Join(dir, "nope"), "--listen", listen}, []string{"--users", "nope", "no such file"}},
		{"users-malformed", []string{"--workers", "2", "--users", malformed, "--listen", listen}, []string{malformed + ":3"}},
		{"users-in-config", []string{"--config", cfgUsers, "--listen", listen}, []string{"--users", "gone", "no such file"}},
		{"open-relay", []string{"--workers", "1", "--listen", "0.0.0.0:1080"}, []string{"0.0.0.0:1080", "--allow-open-relay"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, err := runExit(5*time.Second, tc.args...)
			if code != 1 || strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "sluice: ") {
				t.Fatalf("sluice %q: exit %d (%v), stderr:\n%s\nwant exit 1 and one line", tc.args, code, err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("sluice %q: %q does not name %q", tc.args, out, w)
				}
			}
		})
	}
}

// TestWorkersGiveUpBeforeListening: a worker that ends before it listens,
// on an error only it can find (its listen address or its metrics port
// taken by another program), stops the parent with exit status 1 and a line
// that says which worker and why, where the parent used to restart it once
// a second for ever.
func TestWorkersGiveUpBeforeListening(t *testing.T) {
	t.Parallel()
	// A socket without SO_REUSEPORT: sluice's bind to its port fails.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() }) // after the parallel subtests
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"listen-in-use", []string{"--workers", "2", "--listen", taken.Addr().String()},
			[]string{"--listen " + taken.Addr().String(), "address already in use"}},
		{"metrics-in-use", []string{"--workers", "1", "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--metrics", taken.Addr().String()},
			[]string{"--metrics " + taken.Addr().String(), "address already in use"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, err := runExit(8*time.Second, tc.args...)
			lines := strings.Split(out, "\n")
			last := lines[len(lines)-1]
			if code != 1 || strings.Contains(out, "worker died; restarting") {
				t.Fatalf("sluice %q: exit %d (%v), stderr:\n%s\nwant exit 1 without a restart", tc.args, code, err, out)
			}
			for _, w := range append([]string{"sluice: --workers: worker ", "before it listened", "exit status 1"}, tc.want...) {
				if !strings.Contains(last, w) {
					t.Errorf("sluice %q: last line %q does not say %q; stderr:\n%s", tc.args, last, w, out)
				}
			}
		})
	}
}

// TestWorkersReloadDrainTimeout: a drain timeout raised by a reload holds
// for the parent too. The parent used to keep its start's (1 s) and kill
// the draining worker 5 s past it, cutting a session that the worker's 20 s
// drain had let live.
func TestWorkersReloadDrainTimeout(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(drain string) string {
		return fmt.Sprintf("workers = 1\nlisten = [%q]\naccess-log = false\ndrain-timeout = %q\n", addr, drain)
	}
	cfgPath := writeConfig(t, conf("1s"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := startWorkers(t, ctx, "--config", cfgPath)
	defer p.cmd.Process.Kill()
	p.waitLines(t, map[string]int{"worker started": 1, "sluice listening": 1})

	if err := os.WriteFile(cfgPath, []byte(conf("20s")), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLines(t, map[string]int{"forwarding SIGHUP": 1, "configuration reloaded": 1})

	d, _ := proxy.SOCKS5("tcp", addr, nil, nil)
	c, err := d.Dial("tcp", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustWrite(t, c, []byte("before"))
	expect(t, c, []byte("before"))

	term := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLines(t, map[string]int{"shutting down": 1, "drain_timeout=20s": 1}) // the worker's
	// The old parent killed the worker 6 s after SIGTERM (its 1 s drain
	// plus 5 s): the session must outlive that. This read waits out the
	// window; it is what the test checks, not a synchronisation.
	c.SetReadDeadline(term.Add(6500 * time.Millisecond))
	var b [1]byte
	if n, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("session during the 20 s drain, %v after SIGTERM: read %d bytes, %v; want it still open", time.Since(term).Round(time.Millisecond), n, err)
	}
	c.SetReadDeadline(time.Time{})
	mustWrite(t, c, []byte("after"))
	expect(t, c, []byte("after"))
	c.Close() // the worker's last session ends: it and the parent exit
	p.exited(t)
}

// TestWorkersRestartKeepsTrying: a worker that served and died is
// restarted; when the restart cannot start (its configuration file broken
// since), the parent logs the worker's error and tries again every second
// rather than exiting and taking the other workers down, and the restart
// that follows the file's repair serves again.
func TestWorkersRestartKeepsTrying(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	good := []byte("access-log = false\n")
	cfgPath := writeConfig(t, string(good))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--config", cfgPath, "--listen", addr, "--workers", "1")
	// Killed once the parent knows it served ("worker serving"), not just
	// once it logged that it listens: a worker killed before it told the
	// parent counts as one that never served.
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	if err := os.WriteFile(cfgPath, []byte("access-log = false\ndial-timeout = 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	// The kill, then two restarts that fail on the file.
	p.waitLines(t, map[string]int{"worker died; restarting": 3})
	if err := os.WriteFile(cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	p.waitLines(t, map[string]int{"sluice listening": 1})
	p.stop(t)
}

// TestWorkersDebugAddr: with --workers 2, worker i serves --debug-addr on its
// port + i, as --metrics; on one port the second worker could not bind, and
// sluice would not start.
func TestWorkersDebugAddr(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	debug := freePortPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "2", "--access-log=false", "--debug-addr", fmt.Sprintf("127.0.0.1:%d", debug))
	p.waitLines(t, map[string]int{"sluice listening": 2, "debug server listening": 2})
	for i := range 2 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", debug+i))
		if err != nil {
			t.Fatalf("worker %d's debug server: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("worker %d's debug server: %s", i, resp.Status)
		}
	}
	p.stop(t)
}

// TestWorkersRestartAfterExecFails: a restart that cannot even start its
// process (the executable not executable for a while, fork failing) is
// retried every second, as one whose worker fails at start; it used to be
// logged once and the slot given up, the parent serving on with a worker
// fewer (none, here) for ever.
func TestWorkersRestartAfterExecFails(t *testing.T) {
	t.Parallel()
	// A copy of this binary, run as sluice: its workers exec the copy.
	exe := filepath.Join(t.TempDir(), "sluice")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // safety net
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.CommandContext(ctx, exe, "--listen", addr, "--workers", "1", "--access-log=false")
	cmd.Env = append(os.Environ(), "SLUICE_RUN_MAIN=1")
	p := &workersProc{cmd: cmd, lines: make(chan string, 100)}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	if err := os.Chmod(exe, 0o644); err != nil { // exec now fails: EACCES
		t.Fatal(err)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	p.waitLines(t, map[string]int{"worker died; restarting": 1, "cannot restart worker": 1})
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	p.stop(t)
}

// TestWorkersReloadLogLevel: SIGHUP sets the parent's own log level, not
// only the workers'. After a reload to log-level "warn" nothing logs at
// info, the parent included: its worker, killed, is restarted with an error
// line and no "worker started" line, and stopped without a "stopping
// workers" line. The parent used to keep the level it started with.
func TestWorkersReloadLogLevel(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(level string) []byte { return fmt.Appendf(nil, "access-log = false\nlog-level = %q\n", level) }
	cfgPath := writeConfig(t, string(conf("info")))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--config", cfgPath, "--listen", addr, "--workers", "1")
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	if err := os.WriteFile(cfgPath, conf("warn"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	// Logged before the parent reads the file; one goroutine handles the
	// parent's signals and its workers' exits in turn, so the kill below
	// is seen after the new level is set.
	p.waitLines(t, map[string]int{"forwarding SIGHUP to workers": 1})
	syscall.Kill(pids[0], syscall.SIGKILL)
	after := p.linesUntil(t, "worker died; restarting")
	// The restart (and its "worker started") follows that line on the
	// same goroutine, before the parent sees this SIGTERM.
	p.cmd.Process.Signal(syscall.SIGTERM)
	for l := range p.lines {
		after = append(after, l)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("parent after SIGTERM: %v, want exit 0", err)
	}
	// The parent's info lines. A worker's lines reach the shared stderr
	// through its own log writer, in no set order with the parent's.
	parents := []string{`msg="worker started"`, `msg="worker serving"`, `msg="stopping workers"`, `msg="forwarding SIGHUP to workers"`}
	for _, l := range after {
		if strings.Contains(l, "level=INFO") && slices.ContainsFunc(parents, func(m string) bool { return strings.Contains(l, m) }) {
			t.Errorf("the parent's info line after the reload to log-level warn: %s", l)
		}
	}
}

// linesUntil reads stderr up to the first line that contains want and
// returns the lines read, that one included. It fails the test after 30 s,
// or when stderr ends first.
func (p *workersProc) linesUntil(t *testing.T, want string) []string {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	var lines []string
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("sluice --workers ended before logging %q; read:\n%s", want, strings.Join(lines, "\n"))
			}
			lines = append(lines, l)
			if strings.Contains(l, want) {
				return lines
			}
		case <-timeout.C:
			p.cmd.Process.Kill()
			t.Fatalf("sluice --workers did not log %q within 30 s", want)
		}
	}
}

// TestWorkerArgs: a worker parses its parent's arguments with its own
// flags after them, also when the parent's end with "--", which then
// ends the flags, and not when "--" is the last flag's value.
func TestWorkerArgs(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:1080", "--workers", "2"},
		{"--listen", "127.0.0.1:1080", "--workers", "2", "--"},
		{"--workers", "2", "--pin", "--"},
		{"--workers", "2", "--profile-dir", "--"},
	} {
		cfg, err := parseFlags(workerArgs(args), io.Discard)
		if err != nil {
			t.Errorf("%q: worker's flags: %v", args, err)
			continue
		}
		if cfg.workers != 0 || cfg.tune.Listeners != 1 || cfg.pin {
			t.Errorf("%q: worker runs with workers %d, listeners %d, pin %v", args, cfg.workers, cfg.tune.Listeners, cfg.pin)
		}
		if args[len(args)-2] == "--profile-dir" && cfg.profileDir != "--" {
			t.Errorf("%q: --profile-dir %q", args, cfg.profileDir)
		}
	}
}
