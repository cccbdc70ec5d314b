package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWorkersGroupStop: a SIGTERM sent to the whole process
// group (systemd's default KillMode=control-group, SIGINT from Ctrl-C in a
// terminal) may reach a worker, which drains and exits 0, before it
// reaches the parent's own handling. The parent used to restart that
// worker at once, so a new worker started and served while sluice stopped,
// with an error line "worker died". Here the worker gets its SIGTERM first
// and the parent its own once it has seen the worker's exit, the order
// that lost the race: no worker may start after the first.
func TestWorkersGroupStop(t *testing.T) {
	t.Parallel()
	p := stopOnlyWorker(t)
	after := p.linesUntil(t, "restarting")
	p.cmd.Process.Signal(syscall.SIGTERM)
	for l := range p.lines {
		after = append(after, l)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("parent after SIGTERM: %v, want exit 0", err)
	}
	for _, l := range after {
		if strings.Contains(l, "worker started") || strings.Contains(l, "worker died") {
			t.Errorf("after the worker's SIGTERM: %s\nlog:\n%s", l, strings.Join(after, "\n"))
		}
	}
}

// TestWorkersStoppedRestarts: a worker stopped on its own by
// SIGTERM (the parent not stopping) is still restarted, a second later.
func TestWorkersStoppedRestarts(t *testing.T) {
	t.Parallel()
	p := stopOnlyWorker(t)
	p.waitLines(t, map[string]int{"worker stopped on a signal": 1, "worker started": 1, "worker serving": 1})
	p.stop(t)
}

// stopOnlyWorker starts sluice with --workers 1, waits until its worker
// serves and sends that worker alone SIGTERM.
func stopOnlyWorker(t *testing.T) *workersProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // safety net
	t.Cleanup(cancel)
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "1", "--access-log=false", "--drain-timeout", "1s")
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})
	syscall.Kill(pids[0], syscall.SIGTERM)
	return p
}
