//go:build linux

package relay

import (
	"context"
	"io"
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
// session end cleanly. Both ways round.
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
				g := newRig(t).startAsync(context.Background(), r)
				from, to := g.client, g.upstream
				if first == "upstream" {
					from, to = g.upstream, g.client
				}
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
			})
		}
	}
}
