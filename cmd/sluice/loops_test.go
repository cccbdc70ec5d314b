package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stuckWriter stands for a stderr pipe that nobody drains: once armed, every
// Write blocks until release is closed. started gets a value as each
// blocked Write begins. out keeps what was written.
type stuckWriter struct {
	armed   atomic.Bool
	started chan struct{}
	release chan struct{}
	out     syncBuffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	if w.armed.Load() {
		w.started <- struct{}{}
		<-w.release
	}
	return w.out.Write(p)
}

// startStuckLog starts an in-process sluice with the access log on, one
// listener on 127.0.0.1 and args, logging to a stuckWriter (not armed yet),
// and returns its address, the writer and a func that releases the writer's
// blocked and later writes (run at cleanup, before the shutdown, too).
func startStuckLog(t *testing.T, args ...string) (string, *stuckWriter, func()) {
	t.Helper()
	cfg, err := parseFlags(append([]string{"--listeners", "1", "--listen", "127.0.0.1:0", "--access-log"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = nxdomainResolver(t)
	w := &stuckWriter{started: make(chan struct{}, 16), release: make(chan struct{})}
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(w, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unstick := func() { once.Do(func() { close(w.release) }) }
	t.Cleanup(func() { unstick(); inst.shutdown(5 * time.Second) })
	return inst.addrs()[0], w, unstick
}

// TestStuckAccessLogSparesLoop checks that a session ending while the access
// log cannot be written does not stall the other sessions of its event loop.
func TestStuckAccessLogSparesLoop(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	addr, w, unstick := startStuckLog(t, "--loops", "1")

	a := connectRaw(t, addr, target)
	b := connectRaw(t, addr, target)
	for _, c := range []*net.TCPConn{a, b} {
		mustWrite(t, c, []byte("x"))
		expect(t, c, []byte("x"))
	}
	w.armed.Store(true)
	a.Close() // its session ends and its access log line gets stuck
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the ended session wrote no access log line")
	}
	b.SetDeadline(time.Now().Add(5 * time.Second))
	mustWrite(t, b, []byte("y"))
	expect(t, b, []byte("y"))
	unstick()
}
