//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// socketHooks holds, per socket, what a test hook runs for it. The hooks
// are set once, before any test runs, so that tests that use them run in
// parallel, each with sockets of its own.
type socketHooks struct{ m sync.Map }

func (h *socketHooks) run(c *net.TCPConn) {
	if f, ok := h.m.Load(c); ok {
		f.(func())()
	}
}

// gate makes the hook's first call for c report on reached and wait until
// release (called once the test ends at the latest; more calls are no-ops).
func (h *socketHooks) gate(t *testing.T, c *net.TCPConn) (reached <-chan struct{}, release func()) {
	r, held := make(chan struct{}), make(chan struct{})
	var first, done sync.Once
	h.m.Store(c, func() { first.Do(func() { close(r); <-held }) })
	release = func() { done.Do(func() { close(held) }) }
	t.Cleanup(func() { release(); h.m.Delete(c) })
	return r, release
}

// signal makes the hook's first call for c report on the channel returned.
func (h *socketHooks) signal(t *testing.T, c *net.TCPConn) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	h.m.Store(c, func() { once.Do(func() { close(ch) }) })
	t.Cleanup(func() { h.m.Delete(c) })
	return ch
}

// awaitHook waits for ch, or fails t after safety saying what never came.
func awaitHook(t *testing.T, ch <-chan struct{}, never string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(safety):
		t.Fatal(never)
	}
}

var halfClosing, leftToOther, lookingAtSource socketHooks

func init() {
	testHookHalfClosing = halfClosing.run
	testHookLeftToOther = leftToOther.run
	testHookLookingAtSource = lookingAtSource.run
}

// TestPipeHalfCloseRaceKeepsReset: on the goroutine path, upstream sends
// its FIN, and the upstream->client direction, having found nothing wrong
// with upstream's socket, is about to half-close the client when upstream
// resets and the client's FIN comes. The client->upstream direction's
// half-close then meets ENOTCONN, takes the reset's EPIPE, and leaves it to
// the upstream->client direction, not shutting yet, which had looked
// already: the session ended with no error at all. The hooks hold the
// upstream->client direction until the other left the error to it.
func TestPipeHalfCloseRaceKeepsReset(t *testing.T) {
	t.Parallel()
	r := New(Options{Loops: -1})
	defer r.Close()
	g := newRig(t)
	reached, release := halfClosing.gate(t, g.relayB) // upstream->client: its source is relayB
	left := leftToOther.signal(t, g.relayB)
	g.start(context.Background(), r)
	roundTrip(t, g)

	if err := g.upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	awaitHook(t, reached, "upstream->client never came to pass upstream's FIN on")
	g.upstream.SetLinger(0)
	g.upstream.Close() // a reset after upstream's FIN: EPIPE at the relay
	waitState(t, g.relayB, tcpClose)
	if err := g.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	awaitHook(t, left, "client->upstream's half-close never left upstream's reset to the other direction")
	release()
	res := g.wait(t)
	if !errors.Is(res.err, syscall.EPIPE) {
		t.Fatalf("session ended with %v; want upstream's reset (EPIPE)", res.err)
	}
}

// TestPipeHalfClosesMeetKeepsSession: on the goroutine path, both peers
// half-close at once. The upstream->client direction, at upstream's EOF,
// looks at upstream's socket (the relay sent it no FIN yet, as far as it
// knew) while the other direction half-closes that socket: a zero-length
// send then fails as on a socket gone, and the direction took the stream
// for cut short, passed no FIN and ended nothing, so the session hung, its
// other half watching its source (TestPipeGoroutines hung so 2 to 5 runs
// in 150). The hook holds the look until the half-close is done.
func TestPipeHalfClosesMeetKeepsSession(t *testing.T) {
	t.Parallel()
	r := New(Options{ForceCopy: true})
	defer r.Close()
	g := newRig(t)
	reached, release := lookingAtSource.gate(t, g.relayB)
	g.start(context.Background(), r)
	roundTrip(t, g)
	if err := g.upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	awaitHook(t, reached, "upstream->client never looked at upstream's socket")
	if err := g.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// client->upstream passes the client's FIN: relayB leaves CLOSE_WAIT.
	for end := time.Now().Add(safety); tcpState(t, g.relayB) == tcpCloseWait; {
		if time.Now().After(end) {
			t.Fatal("client->upstream never half-closed upstream's socket")
		}
		runtime.Gosched()
	}
	release()
	if n, err := g.client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v; want upstream's EOF", n, err)
	}
	if res := g.wait(t); res.err != nil {
		t.Fatalf("Pipe: %v; want a clean end", res.err)
	}
}
