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
// along. The upstream's socket buffers are small and it reads 2 KiB every
// tenth of the timeout; 64 KiB, read by the relay at once, take about three
// timeouts to go out.
func TestCopyIdleSlowDestination(t *testing.T) {
	t.Parallel()
	const idle = 400 * time.Millisecond
	r := New(Options{ForceCopy: true, IdleTimeout: idle})
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
	g.start(context.Background(), r)

	// A session that ends early closes the upstream, which ends the reads.
	early := make(chan pipeResult, 1)
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case res := <-g.done:
			early <- res
			g.upstream.Close()
		case <-stop:
		}
	}()
	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	buf := make([]byte, 2<<10)
	got := 0
	var rerr error
	for got < n && rerr == nil {
		<-tick.C
		var k int
		k, rerr = io.ReadFull(g.upstream, buf[:min(len(buf), n-got)])
		got += k
	}
	close(stop)
	<-watched
	select {
	case res := <-early:
		t.Fatalf("session ended after %d of %d bytes, which moved every %v: %v", got, n, idle/10, res.err)
	default:
	}
	if rerr != nil {
		t.Fatalf("upstream read after %d bytes: %v", got, rerr)
	}
	g.client.CloseWrite()
	g.upstream.CloseWrite()
	res := g.wait(t)
	if res.err != nil || res.st.ClientToUpstream != n {
		t.Fatalf("Pipe: %v, %+v; want nil, %d bytes up", res.err, res.st, n)
	}
}
