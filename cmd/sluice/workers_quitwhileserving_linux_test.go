package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWorkerQuitWhileServingKeepsDrain: a worker of --workers takes endDrain
// (SIGQUIT) after its first SIGTERM to mean "end the drain now", and
// listens for it from its start (notifyStop). One that reached it while it
// served (an operator asking a Go program for its goroutine dump) stayed
// buffered, and the next drain read it at once: the first SIGTERM cut every
// live session instead of letting it finish within --drain-timeout. Here
// the session is live and the drain timeout 60 s: it must still work
// through the drain, and no "second signal" line may appear.
func TestWorkerQuitWhileServingKeepsDrain(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // safety net
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "1", "--drain-timeout", "60s", "--access-log=false")
	defer p.cmd.Process.Kill()
	pids := p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})

	// A live CONNECT session through the worker.
	c := dialSluice(t, addr)
	port := uint16(echo.Addr().(*net.TCPAddr).Port)
	req := []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0}
	binary.BigEndian.PutUint16(req[len(req)-2:], port)
	mustWrite(t, c, req)
	expect(t, c, []byte{5, 0})
	rep := make([]byte, 10)
	if _, err := c.Read(rep[:]); err != nil || rep[1] != 0 {
		t.Fatalf("CONNECT reply %x, %v", rep, err)
	}
	mustWrite(t, c, []byte("a"))
	expect(t, c, []byte("a"))

	// The operator asks the worker for a goroutine dump, and later stops sluice.
	syscall.Kill(pids[0], syscall.SIGQUIT)
	p.cmd.Process.Signal(syscall.SIGTERM)

	var after []string
	deadline := time.NewTimer(45 * time.Second)
	defer deadline.Stop()
	sawShutdown := false
	for !sawShutdown {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("sluice ended before its worker logged \"shutting down\": %q", after)
			}
			after = append(after, l)
			sawShutdown = strings.Contains(l, "shutting down") && strings.Contains(l, "worker=0")
		case <-deadline.C:
			t.Fatal("no \"shutting down\" line")
		}
	}
	// The session must still work through the drain; then it ends, and so does the worker.
	_, werr := c.Write([]byte("b"))
	b := make([]byte, 1)
	_, rerr := c.Read(b)
	c.Close()
	for done := false; !done; {
		select {
		case l, ok := <-p.lines:
			if !ok {
				done = true
				break
			}
			after = append(after, l)
		case <-deadline.C:
			t.Fatal("sluice did not exit after the session ended")
		}
	}
	for _, l := range after {
		if strings.Contains(l, "second signal") {
			t.Errorf("one SIGTERM ended the drain at once (a SIGQUIT received while serving was kept): %s", l)
		}
	}
	if werr != nil || rerr != nil || b[0] != 'b' {
		t.Errorf("live session cut during the drain: write %v, read %q %v", werr, b, rerr)
	}
}
