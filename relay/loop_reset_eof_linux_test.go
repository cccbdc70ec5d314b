//go:build linux

package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoopResetBeforeEOFRead: the client sends its bytes and its FIN, then
// resets, all before the loop reads any of it. The reset finds the relay's
// socket in CLOSE_WAIT: what it holds stays readable, then EOF (the FIN came
// first), with the error (EPIPE) left pending behind it. The stream was
// whole: upstream must get every byte, then EOF, and the session then end
// with the reset, labelled client->upstream, though upstream stays open and
// silent (it stayed open for ever, before the loop took the pending error
// at EOF).
//
// When upstream takes every byte at once (large buffers), the loop cannot
// read before the reset: its flows start unreadable and only dispatch,
// which the test holds off through l.mu, marks them readable. When upstream
// takes little (small buffers, reading only after the reset), the direction
// waits for room as the reset comes: the session must not end then,
// dropping the end of a whole stream (TestPipeResetBehindStalledWrite: a
// reset before the FIN does end it), and the caller's close once it ended
// must not reset upstream while the end of the stream is still on its way.
func TestLoopResetBeforeEOFRead(t *testing.T) {
	t.Parallel()
	for _, takes := range []bool{true, false} {
		for _, below := range []int{0, 16 << 10} {
			t.Run(fmt.Sprintf("upstream takes all=%v/CopyBelow=%d", takes, below), func(t *testing.T) {
				t.Parallel()
				r := newRelayLoops(t, 1, Options{PipeBytes: 4096, CopyBelow: below})
				resetAfterFIN(t, r, takes)
			})
		}
	}
}

// TestPipeResetAfterFIN is TestLoopResetBeforeEOFRead's upstream that takes
// little on the goroutine, copy and refused-splice paths, where the
// direction registered with the reset watch at its first wait for room, and
// the watch took the error (EPIPE) while the stream's end was still to pass.
func TestPipeResetAfterFIN(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		if !mode.goroutines() {
			continue
		}
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			resetAfterFIN(t, mode.relay(t), false)
		})
	}
}

// resetAfterFIN is the body of TestLoopResetBeforeEOFRead and
// TestPipeResetAfterFIN; takes needs r on one event loop.
func resetAfterFIN(t *testing.T, r *Relay, takes bool) {
	bufs := sizeBuffers(unix.SO_RCVBUF, 4096)
	if takes {
		bufs = sizeBuffers(unix.SO_RCVBUF, 4<<20, unix.SO_SNDBUF, 4<<20)
	}
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPair(t)
	g.relayB, g.upstream = tcpPairWith(t, &net.ListenConfig{Control: bufs}, &net.Dialer{Control: bufs})
	g.armSafety()
	if !takes {
		g.relayB.SetWriteBuffer(4096)
	}
	g.startAsync(context.Background(), r)
	var l *loop
	if takes {
		l = r.loops.loops[0]
		l.mu.Lock()
	}
	unlock := func() {
		if l != nil {
			l.mu.Unlock()
			l = nil
		}
	}
	defer unlock() // a failure below must not leave the loop held

	const n = 64 << 10
	up := sendAsync(newPattern(31), g.client, n, 64<<10) // then CloseWrite
	waitState(t, g.relayA, tcpCloseWait)                 // every byte and the FIN are in relayA
	if s := <-up; s.err != nil {
		t.Fatal(s.err)
	}
	g.client.SetLinger(0)
	g.client.Close() // a reset
	waitState(t, g.relayA, tcpClose)
	q := queued(t, g.relayA)
	switch {
	case takes && q != n:
		t.Fatalf("relayA holds %d bytes at the reset; want all %d", q, n)
	case q == 0:
		t.Fatal("the relay read the client's EOF before the reset came: nothing tested")
	}
	unlock()
	type drained struct {
		n   int64
		err error
	}
	got := make(chan drained, 1)
	go func() {
		n, _, err := drain(g.upstream)
		got <- drained{n, err}
	}()
	res := g.wait(t)
	// The stream toward upstream was whole: the caller's close must send a
	// FIN behind what is still on its way, not a reset that would drop it
	// (resetOnClose), which upstream, draining as fast as it can, would
	// see only when that close overtook it.
	if lingeredZero(t, g.relayB) {
		t.Error("the relay set SO_LINGER 0 on the socket toward upstream, whose stream was whole")
	}
	// The caller closes at once, as sluice does; upstream stays silent.
	g.relayA.Close()
	g.relayB.Close()
	if d := <-got; d.err != nil || d.n != n {
		t.Fatalf("upstream got %d bytes, %v; want %d, then EOF", d.n, d.err, n)
	}
	if !errors.Is(res.err, syscall.EPIPE) && !errors.Is(res.err, syscall.ECONNRESET) ||
		!strings.Contains(res.err.Error(), "relay: client->upstream: ") {
		t.Fatalf("session: %v; want EPIPE or ECONNRESET labelled client->upstream", res.err)
	}
	if res.st.ClientToUpstream != n {
		t.Errorf("Stats %+v; want %d bytes client->upstream", res.st, n)
	}
}

// lingeredZero reports whether c's close would reset its peer: SO_LINGER on,
// with a time of 0.
func lingeredZero(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var l *unix.Linger
	var gerr error
	if err := rc.Control(func(fd uintptr) { l, gerr = unix.GetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return l.Onoff != 0 && l.Linger == 0
}
