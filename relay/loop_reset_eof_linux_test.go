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
// resets, all while the loop does not read it (upstream reads nothing yet,
// behind small buffers, so the loop holds bytes for it). The reset's
// EPOLLERR comes while client->upstream is not done, so the loop only marks
// the socket readable; the reset finds the socket in CLOSE_WAIT, and what
// the loop reads later is the bytes, then EOF (the FIN came first), with
// the error left pending. Once it passed that EOF on, nothing took the
// error: with upstream silent and open, the session never ended (the
// goroutine path's watchSource takes it at once). It must end with the
// reset, labelled client->upstream, after upstream got every byte and EOF.
func TestLoopResetBeforeEOFRead(t *testing.T) {
	t.Parallel()
	for _, below := range []int{0, 16 << 10} {
		t.Run(fmt.Sprintf("CopyBelow=%d", below), func(t *testing.T) {
			t.Parallel()
			r := newRelayLoops(t, 1, Options{PipeBytes: 4096, CopyBelow: below})
			small := &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var err error
				c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
				return err
			}}
			g := &rig{done: make(chan pipeResult, 1)}
			g.client, g.relayA = tcpPair(t)
			g.relayB, g.upstream = tcpPairWith(t, small, &net.Dialer{})
			g.armSafety()
			g.relayB.SetWriteBuffer(4096)
			g.startAsync(context.Background(), r)

			const n = 64 << 10
			up := sendAsync(newPattern(31), g.client, n, 64<<10) // then CloseWrite
			waitState(t, g.relayA, tcpCloseWait)                 // every byte and the FIN are in relayA
			if s := <-up; s.err != nil {
				t.Fatal(s.err)
			}
			g.client.SetLinger(0)
			g.client.Close() // a reset
			waitState(t, g.relayA, tcpClose)
			if q := queued(t, g.relayA); q == 0 {
				t.Fatal("the loop read the client's EOF before the reset came: nothing tested")
			}
			got, _, err := drain(g.upstream)
			if err != nil || got != n {
				t.Fatalf("upstream got %d bytes, %v; want %d, then EOF", got, err, n)
			}
			// upstream stays open and silent.
			res := g.wait(t)
			if !errors.Is(res.err, syscall.EPIPE) && !errors.Is(res.err, syscall.ECONNRESET) ||
				!strings.Contains(res.err.Error(), "relay: client->upstream: ") {
				t.Fatalf("session: %v; want EPIPE or ECONNRESET labelled client->upstream", res.err)
			}
			if res.st.ClientToUpstream != n {
				t.Errorf("Stats %+v; want %d bytes client->upstream", res.st, n)
			}
		})
	}
}
