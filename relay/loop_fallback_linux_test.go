//go:build linux

package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoopRefusedOneSide: the kernel refuses to splice from the client's
// socket only (an MPTCP client on an older kernel beside a TCP upstream),
// after upstream->client spliced. The session must go on, as on the
// goroutine path, which decides per direction, and say it fell back; it
// used to end with "splice: invalid argument" because a byte had moved the
// other way.
func TestLoopRefusedOneSide(t *testing.T) {
	t.Parallel()
	t.Run("upstream speaks first", func(t *testing.T) {
		t.Parallel()
		r := newRelayLoops(t, 1, Options{})
		r.refuseSplice = unix.EINVAL // as the kernel would on the goroutine path, after a hand-off
		r.loops.loops[0].refuse[sideClient] = unix.EINVAL
		g := newRig(t).startAsync(context.Background(), r)
		banner := []byte("220 ready\r\n") // spliced to the client
		if _, err := g.upstream.Write(banner); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(g.client, make([]byte, len(banner))); err != nil {
			t.Fatal(err)
		}
		answer := []byte("EHLO x\r\n") // the client's splice is refused
		if _, err := g.client.Write(answer); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() { _, err := io.ReadFull(g.upstream, make([]byte, len(answer))); got <- err }()
		select {
		case res := <-g.done:
			t.Fatalf("session ended before the client's answer went up: %v, %+v", res.err, res.st)
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		}
		roundTrip(t, g)
		g.client.CloseWrite()
		g.upstream.CloseWrite()
		res := g.wait(t)
		if res.err != nil || !res.st.Fallback || res.st.ClientToUpstream != int64(len(answer))+1 || res.st.UpstreamToClient != int64(len(banner))+1 {
			t.Fatalf("session: %v, %+v; want nil, Fallback, %d and %d bytes", res.err, res.st, len(answer)+1, len(banner)+1)
		}
	})
	t.Run("while upstream->client holds bytes", func(t *testing.T) {
		t.Parallel()
		r := newRelayLoops(t, 1, Options{CopyBelow: 16 << 10})
		r.loops.loops[0].refuse[sideClient] = unix.EINVAL
		g := startHeldDown(t, r)
		// The client's first read fills the buffer; its splice is refused
		// while the other direction holds bytes: it reads through its
		// buffer from then on, which Stats reports as a fallback.
		relayHeldDown(t, g)
	})
}

// TestLoopNoPipeWhileOtherHolds: no pipe to be had (EMFILE, none pooled)
// for a direction while the other one holds bytes in its pipe. A hand-off
// would drop those bytes; the session used to end with "pipe2: too many open
// files" instead, losing them. It must go on, the direction reading through
// a buffer.
func TestLoopNoPipeWhileOtherHolds(t *testing.T) {
	t.Parallel()
	for _, below := range []int{0, 16 << 10} {
		t.Run(fmt.Sprintf("CopyBelow=%d", below), func(t *testing.T) {
			t.Parallel()
			r := newRelayLoops(t, 1, Options{CopyBelow: below})
			g := startHeldDown(t, r)
			r.pipes.refuse.Store(true)
			relayHeldDown(t, g)
		})
	}
}

const heldDownBytes, heldUpBytes = 8 << 20, 1 << 20

// heldDown is a session whose upstream->client direction holds bytes in the
// relay: the client reads nothing yet, behind small buffers.
type heldDown struct {
	*rig
	down chan sent
}

// startHeldDown starts a session on r in which upstream sends
// heldDownBytes and the client reads none, and returns once the relay
// holds bytes for the client: it spliced some to the client and stopped
// reading upstream.
func startHeldDown(t *testing.T, r *Relay) heldDown {
	t.Helper()
	small := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return err
	}}
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPairWith(t, &net.ListenConfig{}, small)
	g.relayB, g.upstream = tcpPair(t)
	g.armSafety()
	g.relayA.SetWriteBuffer(4096) // soon full: the relay's pipe then keeps what it read
	g.startAsync(context.Background(), r)
	down := sendAsync(newPattern(21), g.upstream, heldDownBytes, 256<<10)
	waitQueued(t, g.client, 1)
	waitQueued(t, g.relayB, 64<<10)
	return heldDown{g, down}
}

// relayHeldDown sends heldUpBytes from the client, checks that upstream
// gets them while the client still reads nothing, then that the client gets
// everything upstream sent, and that the session ends cleanly, with Fallback.
func relayHeldDown(t *testing.T, g heldDown) {
	t.Helper()
	up := sendAsync(newPattern(22), g.client, heldUpBytes, 64<<10)
	atUp := drainAsync(g.upstream)
	select {
	case res := <-g.done:
		t.Fatalf("session ended while the client sent: %v, %+v", res.err, res.st)
	case a := <-atUp:
		u := <-up
		if a.err != nil || u.err != nil || a.n != heldUpBytes || a.sum != u.sum {
			t.Fatalf("upstream got %d bytes (%v, %v), checksum match %v; want %d", a.n, a.err, u.err, a.sum == u.sum, heldUpBytes)
		}
	}
	atClient := drainAsync(g.client)
	d, c := <-g.down, <-atClient
	if d.err != nil || c.err != nil || c.n != heldDownBytes || c.sum != d.sum {
		t.Fatalf("client got %d bytes (%v, %v), checksum match %v; want %d", c.n, c.err, d.err, c.sum == d.sum, heldDownBytes)
	}
	res := g.wait(t)
	if res.err != nil || !res.st.Fallback || res.st.ClientToUpstream != heldUpBytes || res.st.UpstreamToClient != heldDownBytes {
		t.Fatalf("session: %v, %+v; want nil, Fallback, %d and %d bytes", res.err, res.st, heldUpBytes, heldDownBytes)
	}
}
