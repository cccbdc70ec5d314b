package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestObsDrainScraped: after SIGTERM, /metrics and --debug-addr serve on
// while the drain waits for the sessions, so that an operator sees
// sluice_sessions_active count down; sluice exits 0 once the last one
// ends. Both servers used to close at SIGTERM: a drain could not be
// scraped.
func TestObsDrainScraped(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	p := startProc(t, "--listen", "127.0.0.1:0", "--listeners", "1", "--access-log=false",
		"--metrics", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0", "--drain-timeout", "5m")
	debug := lineAddr(p.waitLine(t, "debug server listening"))
	maddr := lineAddr(p.waitLine(t, "metrics listening"))
	a, b := connectRaw(t, p.addr, target), connectRaw(t, p.addr, target)

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "shutting down")
	if got := value(scrape(t, maddr), "sluice_sessions_active", "command", "connect"); got != 2 {
		t.Errorf("draining, two sessions open: sluice_sessions_active{command=connect} = %v, want 2", got)
	}
	resp, err := http.Get("http://" + debug + "/debug/pprof/")
	if err != nil {
		t.Fatalf("draining: --debug-addr: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("draining: --debug-addr: %s", resp.Status)
	}
	// The drain goes on with one session left, and the gauge says so.
	a.Close()
	var got float64
	if !waitFor(10*time.Second, func() bool {
		got = value(scrape(t, maddr), "sluice_sessions_active", "command", "connect")
		return got == 1
	}) {
		t.Errorf("draining, one session closed: sluice_sessions_active{command=connect} = %v, want 1", got)
	}
	mustWrite(t, b, []byte("still relayed"))
	expect(t, b, []byte("still relayed"))
	b.Close() // the last session: the drain ends
	if err := p.wait(t); err != nil {
		t.Fatalf("exit: %v, want 0", err)
	}
}

// TestObsDrainScrapedWorkers is TestObsDrainScraped under --workers: the
// parent forwards SIGTERM, and the worker's own /metrics serves until its
// drain is over.
func TestObsDrainScrapedWorkers(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // safety net
	defer cancel()
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "1", "--access-log=false",
		"--metrics", "127.0.0.1:0", "--drain-timeout", "5m")
	// The worker logs this line once its SOCKS listener is bound and
	// its signal handler set.
	maddr := lineAddr(lastLine(p.linesUntil(t, "metrics listening")))
	c := connectRaw(t, addr, target)

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.linesUntil(t, "shutting down") // the worker's
	if got := value(scrape(t, maddr), "sluice_sessions_active", "command", "connect"); got != 1 {
		t.Errorf("worker draining, a session open: sluice_sessions_active{command=connect} = %v, want 1", got)
	}
	mustWrite(t, c, []byte("still relayed"))
	expect(t, c, []byte("still relayed"))
	c.Close()
	p.exited(t)
}

func lastLine(lines []string) string { return lines[len(lines)-1] }
