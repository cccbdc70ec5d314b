//go:build linux

package relay

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGoPathHandOffAfterHalfClose: an event loop passes one direction's
// EOF on (a request, then the client's FIN) and then hands the session to
// the goroutine path, because no pipe can be had (EMFILE) or the kernel
// refuses to splice from the other source (an MPTCP upstream), when the
// answer comes with its FIN. The goroutine path reads the finished
// source's EOF again and half-closes its destination again, which by then
// has the peer's FIN too: shutdown(2) answers ENOTCONN there. That used to
// end the session with "shutdown: transport endpoint is not connected" and
// drop the answer; it must reach the other side whole, then EOF, and the
// session end cleanly. Both ways round. Nor may the goroutine path read the
// finished direction's EOF again: the loop tells it which directions are
// finished, so their destinations get no second half-close there, and the
// answer's exactly one (it used to half-close both, and only closeWrite's
// tolerance of ENOTCONN kept the session alive).
func TestGoPathHandOffAfterHalfClose(t *testing.T) {
	t.Parallel()
	// "loop refused": only the loop is refused, so that the goroutine path
	// splices (spliceHalf); otherwise it reads and writes (copyHalf).
	for _, why := range []string{"no pipe", "refused", "loop refused"} {
		for _, first := range []string{"client", "upstream"} {
			t.Run(why+"/"+first+" first", func(t *testing.T) {
				t.Parallel()
				r := newRelayLoops(t, 1, Options{})
				fromSide := sideClient
				if first == "upstream" {
					fromSide = sideUpstream
				}
				if why != "no pipe" {
					// The first source splices; the other one, which
					// the loop reads only once its answer comes, not.
					r.loops.loops[0].refuse[1-fromSide] = unix.EINVAL
				}
				if why == "refused" {
					r.refuseSplice = unix.EINVAL // on the goroutine path too
				}
				g := newRig(t)
				from, to := g.client, g.upstream
				fromDst, toDst := g.relayB, g.relayA // the relay's sockets each direction writes
				if first == "upstream" {
					from, to = g.upstream, g.client
					fromDst, toDst = g.relayA, g.relayB
				}
				var shutFrom, shutTo atomic.Int32
				closeWrites.Store(fromDst, &shutFrom)
				closeWrites.Store(toDst, &shutTo)
				defer closeWrites.Delete(fromDst)
				defer closeWrites.Delete(toDst)
				g.startAsync(context.Background(), r)
				if _, err := from.Write([]byte("req")); err != nil {
					t.Fatal(err)
				}
				from.CloseWrite()
				if got, err := io.ReadAll(to); err != nil || string(got) != "req" {
					t.Fatalf("read %q, %v; want \"req\" then EOF", got, err)
				}
				if why == "no pipe" {
					// The loop has passed the FIN on and given its pipe
					// back: none is to be had for the answer.
					r.pipes.refuse.Store(true)
					r.pipes.trim()
				}
				answer := make(chan error, 1)
				go func() {
					_, err := to.Write([]byte("resp"))
					if err == nil {
						err = to.CloseWrite()
					}
					answer <- err
				}()
				type readAll struct {
					b   []byte
					err error
				}
				atFrom := make(chan readAll, 1)
				go func() { b, err := io.ReadAll(from); atFrom <- readAll{b, err} }()
				if err := <-answer; err != nil {
					t.Fatal(err)
				}
				res := g.wait(t)
				// Close as Pipe's caller does: a session that failed then
				// fails the read at once, not at the safety deadline.
				g.relayA.Close()
				g.relayB.Close()
				got := <-atFrom
				if got.err != nil || string(got.b) != "resp" || res.err != nil {
					t.Fatalf("%s got %q, %v; session: %v, %+v; want \"resp\" then EOF, nil", first, got.b, got.err, res.err, res.st)
				}
				up, down := int64(3), int64(4)
				if first == "upstream" {
					up, down = down, up
				}
				wantFallback := why != "loop refused"
				if res.st.ClientToUpstream != up || res.st.UpstreamToClient != down || res.st.Fallback != wantFallback {
					t.Fatalf("Stats = %+v; want %d and %d bytes, Fallback %v", res.st, up, down, wantFallback)
				}
				if shutFrom.Load() != 0 || shutTo.Load() != 1 {
					t.Errorf("goroutine path half-closed the finished direction's destination %d times, the answer's %d; want 0 and 1",
						shutFrom.Load(), shutTo.Load())
				}
			})
		}
	}
}

// closeWrites counts closeWrite's half-closes of the sockets a test put in
// it (*net.TCPConn to *atomic.Int32). The hook is set once, before any
// test runs, so that tests that count run in parallel.
var closeWrites sync.Map

func init() {
	testHookCloseWrite = func(dst *net.TCPConn) {
		if n, ok := closeWrites.Load(dst); ok {
			n.(*atomic.Int32).Add(1)
		}
	}
}
