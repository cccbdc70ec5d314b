//go:build unix

package relay

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestCopyIdleSlowDestination: on the plain path, a destination that takes
// a large read's bytes slowly keeps its session alive: the bytes count for
// the idle timeout as each write takes them, where package net's Write
// counted them only once the whole buffer was out, and a buffer that took
// longer than the timeout to go out ended a session whose bytes moved all
// along. The relay reads up to 64 KiB at once; the upstream's socket
// buffers are small, and it reads 2 KiB at a time. After each of its
// reads the watchdog's count must come to the bytes it read, well before
// the relay wrote out what it read, and each check the test makes then
// (the timeout is an hour, and the test makes the checks) spares the
// session.
func TestCopyIdleSlowDestination(t *testing.T) {
	t.Parallel()
	r := New(Options{ForceCopy: true, IdleTimeout: time.Hour})
	defer r.Close()
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) }); cerr != nil {
				return cerr
			}
			return err
		}
	}
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPair(t)
	g.relayB, g.upstream = tcpPairWith(t, &net.ListenConfig{Control: small(syscall.SO_RCVBUF)}, &net.Dialer{Control: small(syscall.SO_SNDBUF)})
	g.armSafety()
	const n = 64 << 10
	if _, err := g.client.Write(make([]byte, n)); err != nil { // waiting for the relay's first read
		t.Fatal(err)
	}
	dogs := watchdogsOf(t, g.relayA)
	g.start(context.Background(), r)
	w := <-dogs

	buf := make([]byte, 2<<10)
	var got, checked int64
	checks := 0
	for got < n {
		k, err := io.ReadFull(g.upstream, buf[:min(int64(len(buf)), n-got)])
		if got += int64(k); err != nil {
			t.Fatalf("upstream read after %d bytes: %v", got, err)
		}
		// The bytes read were written by calls that count them as they
		// return: the count comes to them, though the relay may not
		// have written out its read yet.
		if p := waitProgress(t, w, got); p > checked {
			w.check()
			if w.s.cause.Load() != causeNone {
				t.Fatalf("the idle timeout ended the session after %d of %d bytes, which moved since its last check", got, n)
			}
			checked, checks = p, checks+1
		}
	}
	if checks < 2 {
		t.Fatalf("the count moved %d times during the transfer; want it to move as the writes take the bytes", checks)
	}
	g.client.CloseWrite()
	g.upstream.CloseWrite()
	res := g.wait(t)
	if res.err != nil || res.st.ClientToUpstream != n {
		t.Fatalf("Pipe: %v, %+v; want nil, %d bytes up", res.err, res.st, n)
	}
}
