package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalEnds: a second SIGTERM during a drain of 60 s
// ends it at once. A CONNECT session lives through the first SIGTERM (the
// drain lets it finish); the second closes it, and sluice exits 0, long
// before the drain timeout (the context, 15 s, kills a sluice that waits
// it out, and the test fails). With --workers 1 the parent passes the
// second signal on, and a SIGTERM that reaches the worker itself as well
// (sent to the whole process group) does not end its drain.
func TestSecondSignalEnds(t *testing.T) {
	t.Parallel()
	for name, workers := range map[string]bool{"process": false, "workers": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			echo := echoServer(t, "tcp", "127.0.0.1:0")
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // safety net, far under the drain
			defer cancel()
			args := []string{"--listen", addr, "--listeners", "1", "--drain-timeout", "60s"}
			want := map[string]int{"sluice listening": 1}
			if workers {
				args = append(args, "--workers", "1")
				want["worker started"] = 1
			}
			p := startWorkers(t, ctx, args...)
			t.Cleanup(func() { p.cmd.Process.Kill() })
			pids := p.waitLines(t, want)
			defer context.AfterFunc(ctx, func() { // a worker outlives its killed parent's stderr
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})()
			c := connectRaw(t, addr, echo.Addr().(*net.TCPAddr))
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			mustWrite(t, c, []byte("before"))
			expect(t, c, []byte("before"))

			p.cmd.Process.Signal(syscall.SIGTERM)
			p.linesUntil(t, "shutting down")
			if workers {
				syscall.Kill(pids[0], syscall.SIGTERM) // as a signal to the group would
			}
			mustWrite(t, c, []byte("draining"))
			expect(t, c, []byte("draining"))

			start := time.Now()
			p.cmd.Process.Signal(syscall.SIGTERM)
			var after []string
			for l := range p.lines { // to the end of stderr: every process gone
				after = append(after, l)
			}
			err := p.cmd.Wait()
			log := strings.Join(after, "\n")
			if err != nil {
				t.Fatalf("after the second SIGTERM: %v (%v), want exit 0 at once; log:\n%s", err, time.Since(start).Round(time.Millisecond), log)
			}
			if !strings.Contains(log, "second signal: ending the drain now") {
				t.Errorf("no line for the second signal; log:\n%s", log)
			}
			if strings.Contains(log, "drain timeout") {
				t.Errorf("the drain timed out; log:\n%s", log)
			}
			expectClosed(t, c)
			t.Logf("exited %v after the second SIGTERM", time.Since(start).Round(time.Millisecond))
		})
	}
}
