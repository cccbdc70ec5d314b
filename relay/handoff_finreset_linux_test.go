//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
)

// TestLoopHandOffKeepsFinReset: on a loop, the client's FIN meets an
// upstream reset after its own FIN (shutdown answers ENOTCONN, EPIPE
// taken): the loop records it in finReset[upstream] and lets the
// upstream->client direction pass the rest and the FIN on. When that
// direction then hands the session off to the goroutine path (no pipe to
// be had), the session must still end with the reset (EPIPE): the error was
// taken from the socket, and the goroutine path only reads an EOF there.
//
// The loop is held inside the done of a second session on it while the
// client's FIN and then upstream's FIN and reset come in, so that the loop
// dispatches the client's event first, in one batch.
func TestLoopHandOffKeepsFinReset(t *testing.T) {
	r := newRelayLoops(t, 1, Options{CopyBelow: 16})
	g := newRig(t)
	g.startAsync(context.Background(), r)

	// upstream->client: a read that fills the 16-byte buffer makes the
	// direction's next read a splice (bulk), which needs a pipe.
	b := make([]byte, 16)
	if _, err := g.upstream.Write(b); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(g.client, b); err != nil {
		t.Fatal(err)
	}
	// client->upstream: a short read, the next one small (no pipe).
	if _, err := g.client.Write(b[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(g.upstream, b[:1]); err != nil {
		t.Fatal(err)
	}

	release := holdLoop(t, r)
	defer release()

	if err := g.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitState(t, g.relayA, tcpCloseWait)
	if err := g.upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitState(t, g.relayB, tcpCloseWait)
	g.upstream.SetLinger(0)
	g.upstream.Close() // a reset after upstream's FIN: EPIPE at the relay
	waitState(t, g.relayB, tcpClose)
	r.pipes.refuse.Store(true) // upstream->client's next read hands off
	release()

	res := g.wait(t)
	if !errors.Is(res.err, syscall.EPIPE) {
		t.Fatalf("session ended with %v (Stats %+v); want upstream's reset (EPIPE)", res.err, res.st)
	}
}
