package relay

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestMature: Options.Mature runs once on the upstream descriptor of a
// StartFds session that outlives MatureAfter, on its loop and no sooner;
// never for a session that ended before; and at once, before StartFds
// returns, where no loop takes the session.
func TestMature(t *testing.T) {
	t.Parallel()
	const after = time.Second // room for a short session on a busy machine
	for _, loops := range []int{1, -1} {
		name := "loop"
		if loops < 0 {
			name = "goroutines"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			type call struct {
				fd int
				at time.Time
			}
			calls := make(chan call, 8)
			o := Options{MatureAfter: after, Mature: func(fd int) { calls <- call{fd, time.Now()} }}
			var r *Relay
			if loops > 0 {
				r = newRelayLoops(t, loops, o)
			} else {
				o.Loops = loops
				r = New(o)
				t.Cleanup(func() { r.Close() })
			}
			onLoop := r.onLoop()

			// A session that ends at once.
			short, shortFd, shortStart := startBare(t, r)
			if !onLoop {
				if c := <-calls; c.fd != shortFd {
					t.Errorf("goroutine path: Mature(%d), want Mature(%d) at once", c.fd, shortFd)
				}
			}
			roundTrip(t, short)
			short.client.CloseWrite()
			short.upstream.CloseWrite()
			if res := short.wait(t); res.err != nil {
				t.Fatalf("short session: %v", res.err)
			}
			if d := time.Since(shortStart); onLoop && d >= after {
				t.Fatalf("the short session took %v to end, not under MatureAfter (%v): the test proves nothing", d, after)
			}

			// A session that lives on.
			long, longFd, longStart := startBare(t, r)
			if onLoop {
				select {
				case c := <-calls:
					if c.fd != longFd || c.at.Sub(longStart) < after {
						t.Errorf("Mature(%d) %v after the long session started; want Mature(%d) no sooner than %v",
							c.fd, c.at.Sub(longStart), longFd, after)
					}
				case <-time.After(safety):
					t.Fatal("Mature never ran for the session that outlived MatureAfter")
				}
			} else if c := <-calls; c.fd != longFd {
				t.Errorf("goroutine path: Mature(%d), want Mature(%d)", c.fd, longFd)
			}
			roundTrip(t, long) // the session relays on after Mature
			long.client.CloseWrite()
			long.upstream.CloseWrite()
			if res := long.wait(t); res.err != nil || res.st.ClientToUpstream != 1 {
				t.Errorf("long session: %v, %+v; want nil, 1 byte each way", res.err, res.st)
			}
			if n := len(calls); n != 0 {
				t.Errorf("%d more Mature calls; want one per session that outlived MatureAfter", n)
			}
		})
	}
}

// startBare starts a StartFds session over a new rig, with descriptors
// duplicated from the rig's relay ends (which it closes), and returns the
// rig, the upstream descriptor and the time just before StartFds.
func startBare(t *testing.T, r *Relay) (*rig, int, time.Time) {
	t.Helper()
	g := newRig(t)
	fds := bareFds(t, g)
	start := time.Now()
	r.StartFds(context.Background(), fds[0], fds[1], func(st Stats, err error) { g.done <- pipeResult{st, err} })
	return g, fds[1], start
}

// bareFds duplicates the rig's relay ends as bare descriptors, for
// StartFds, and closes the conns.
func bareFds(t *testing.T, g *rig) [2]int {
	t.Helper()
	var fds [2]int
	for i, c := range []*net.TCPConn{g.relayA, g.relayB} {
		fd, err := dupFd(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		fds[i] = fd
	}
	return fds
}
