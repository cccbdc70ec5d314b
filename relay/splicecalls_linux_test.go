//go:build linux

package relay

import (
	"context"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestSpliceCallsLeaveOutMark: Stats.SpliceCalls counts splice(2) calls.
// The relay passes an urgent mark with a one-byte read(2) into the pipe
// (passMark), which is no splice: it used to be counted as one. The client
// sends an urgent byte and then one byte, both in the relay's socket
// before the session starts, so the stream begins at the mark: the byte
// after it comes in by that read and goes out by one splice. Loops and
// goroutines.
func TestSpliceCallsLeaveOutMark(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"loops", Options{}}, {"goroutines", Options{Loops: -1}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			g := newRig(t)
			send(t, g.client, "X", syscall.MSG_OOB)
			send(t, g.client, "d", 0)
			waitAcked(t, g.client) // both in relayA
			g.start(context.Background(), r)
			g.client.CloseWrite()
			if got, err := io.ReadAll(g.upstream); err != nil || string(got) != "d" {
				t.Fatalf("upstream read %q, %v; want \"d\" then EOF", got, err)
			}
			g.upstream.CloseWrite()
			res := g.wait(t)
			if res.err != nil || res.st.ClientToUpstream != 1 || res.st.UpstreamToClient != 0 {
				t.Fatalf("session: %v, %+v; want nil, 1 byte up, none down", res.err, res.st)
			}
			if !res.st.Spliced || res.st.SpliceCalls != 1 {
				t.Errorf("Stats %+v; want Spliced and 1 splice call (the byte out of the pipe)", res.st)
			}
		})
	}
}

// send writes b to c with send(2) flags.
func send(t *testing.T, c *net.TCPConn, b string, flags int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), []byte(b), flags, nil)
		return serr != syscall.EAGAIN
	}); err != nil || serr != nil {
		t.Fatalf("send %q: %v, %v", b, err, serr)
	}
}

// waitAcked waits until every byte c sent was acknowledged by its peer
// (SIOCOUTQ 0): they are in the peer's receive queue.
func waitAcked(t *testing.T, c *net.TCPConn) {
	t.Helper()
	for end := time.Now().Add(safety); ; {
		q := unsent(t, c)
		if q == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d bytes not acknowledged", q)
		}
		runtime.Gosched()
	}
}
