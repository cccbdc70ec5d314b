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

// halfClosing and leftToOther hold, per socket, what testHookHalfClosing
// and testHookLeftToOther run for it (func()). The hooks are set once,
// before any test runs, so that tests that use them run in parallel.
var halfClosing, leftToOther sync.Map

func init() {
	testHookHalfClosing = func(c *net.TCPConn) {
		if f, ok := halfClosing.Load(c); ok {
			f.(func())()
		}
	}
	testHookLeftToOther = func(c *net.TCPConn) {
		if f, ok := leftToOther.Load(c); ok {
			f.(func())()
		}
	}
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
	reached, release, left := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	halfClosing.Store(g.relayB, func() { close(reached); <-release }) // upstream->client: its source is relayB
	leftToOther.Store(g.relayB, func() { once.Do(func() { close(left) }) })
	defer halfClosing.Delete(g.relayB)
	defer leftToOther.Delete(g.relayB)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	g.start(context.Background(), r)
	roundTrip(t, g)

	if err := g.upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(safety):
		t.Fatal("upstream->client never came to pass upstream's FIN on")
	}
	g.upstream.SetLinger(0)
	g.upstream.Close() // a reset after upstream's FIN: EPIPE at the relay
	waitState(t, g.relayB, tcpClose)
	if err := g.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-left:
	case <-time.After(safety):
		t.Fatal("client->upstream's half-close never left upstream's reset to the other direction")
	}
	close(release)
	res := g.wait(t)
	if !errors.Is(res.err, syscall.EPIPE) {
		t.Fatalf("session ended with %v; want upstream's reset (EPIPE)", res.err)
	}
}

// lookingAtSource holds, per socket, what testHookLookingAtSource runs for
// it (func()).
var lookingAtSource sync.Map

func init() {
	testHookLookingAtSource = func(c *net.TCPConn) {
		if f, ok := lookingAtSource.Load(c); ok {
			f.(func())()
		}
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
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	lookingAtSource.Store(g.relayB, func() { once.Do(func() { close(reached); <-release }) })
	defer lookingAtSource.Delete(g.relayB)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	g.start(context.Background(), r)
	roundTrip(t, g)
	if err := g.upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(safety):
		t.Fatal("upstream->client never looked at upstream's socket")
	}
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
	close(release)
	if n, err := g.client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v; want upstream's EOF", n, err)
	}
	if res := g.wait(t); res.err != nil {
		t.Fatalf("Pipe: %v; want a clean end", res.err)
	}
}
