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
// returns, where no loop takes the session. The loop runs on the test's
// clock, which stands still while the short session lives and then moves
// on past MatureAfter in steps: no machine is too busy for the short
// session to end in time.
func TestMature(t *testing.T) {
	t.Parallel()
	const after = time.Hour
	for _, loops := range []int{1, -1} {
		name := "loop"
		if loops < 0 {
			name = "goroutines"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			type call struct {
				fd int
				at time.Duration // on the loop's clock
			}
			var elapse func(time.Duration)
			var clock func() time.Duration
			calls := make(chan call, 8)
			o := Options{MatureAfter: after, Mature: func(fd int) { calls <- call{fd, clock()} }}
			var r *Relay
			if loops > 0 {
				r = newRelayLoops(t, loops, o)
				elapse, clock = testClock(r.loops.loops[0])
			} else {
				o.Loops = loops
				r = New(o)
				t.Cleanup(func() { r.Close() })
				clock = func() time.Duration { return 0 }
			}
			onLoop := r.onLoop()

			// A session that ends at once.
			short, shortFd := startBare(t, r)
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

			// A session that lives on.
			longStart := clock()
			long, longFd := startBare(t, r)
			if onLoop {
				for range 8 { // twice MatureAfter, in steps of a quarter
					elapse(after / 4)
				}
				select {
				case c := <-calls:
					if c.fd != longFd || c.at-longStart < after {
						t.Errorf("Mature(%d) %v after the long session started; want Mature(%d) no sooner than %v",
							c.fd, c.at-longStart, longFd, after)
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
// rig and the upstream descriptor.
func startBare(t *testing.T, r *Relay) (*rig, int) {
	t.Helper()
	g := newRig(t)
	fds := bareFds(t, g)
	r.StartFds(context.Background(), fds[0], fds[1], func(st Stats, err error) { g.done <- pipeResult{st, err} })
	return g, fds[1]
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
