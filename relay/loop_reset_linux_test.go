//go:build linux

package relay

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestLoopResetMeetsEOF: one side's FIN and the other side's reset are both
// in the relay's sockets when the loop first looks, so it sees them in one
// epoll batch. Passing the FIN on half-closes the reset socket, which
// answers ENOTCONN: the session used to end with "shutdown: transport
// endpoint is not connected". It must end with the reset, labelled with
// the direction that reads the reset socket, as when the loop meets the
// reset first. Each side resets in turn.
func TestLoopResetMeetsEOF(t *testing.T) {
	t.Parallel()
	for _, side := range []string{"upstream", "client"} {
		t.Run(side+" resets", func(t *testing.T) {
			t.Parallel()
			r := newRelayLoops(t, 1, Options{})
			g := newRig(t)
			label := finAndReset(t, g, side)
			g.startAsync(context.Background(), r)
			res := g.wait(t)
			if !errors.Is(res.err, syscall.ECONNRESET) || !strings.Contains(res.err.Error(), label) {
				t.Fatalf("session: %v; want ECONNRESET labelled %q", res.err, label)
			}
		})
	}
}

// finAndReset has the side that does not reset (side: "upstream" or
// "client") half-close and the other reset, and waits until both are in
// the relay's sockets of g, before its session starts. It returns the label
// the reset must end the session with: the direction that reads the reset
// socket.
func finAndReset(t *testing.T, g *rig, side string) (label string) {
	t.Helper()
	// finner half-closes, resetter resets; finned and reset are their
	// relay sockets.
	finner, finned, resetter, reset, label := g.client, g.relayA, g.upstream, g.relayB, "relay: upstream->client: "
	if side == "client" {
		finner, finned, resetter, reset, label = g.upstream, g.relayB, g.client, g.relayA, "relay: client->upstream: "
	}
	finner.CloseWrite()
	waitState(t, finned, tcpCloseWait)
	resetter.SetLinger(0)
	resetter.Close()
	waitState(t, reset, tcpClose)
	return label
}
