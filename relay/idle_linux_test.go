//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// TestPipeIdleTrickle: the idle timeout spares a session that moves a byte
// every tenth of the timeout, over three timeouts, and ends it once no byte
// moved for a whole timeout: on a loop at the first sweep after it, on the
// goroutine path at the end of the next whole period (between one and two
// timeouts). The timeout is an hour, on the relay's own clocks, which the
// test moves: a loop's (testNow), and on the goroutine path the watchdog's
// periods, whose checks the test makes itself. Only bytes and the test's
// steps decide, not the machine's scheduling.
func TestPipeIdleTrickle(t *testing.T) {
	t.Parallel()
	const idle = time.Hour
	for _, mode := range []struct {
		name string
		opts Options
	}{{"loops", Options{IdleTimeout: idle}}, {"goroutines", Options{Loops: -1, IdleTimeout: idle}}, {"copy", Options{ForceCopy: true, IdleTimeout: idle}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			g := newRig(t)
			// elapse moves the relay's clock on by d: a loop sweeps when
			// due; the goroutine path's watchdog checks at each period's
			// end.
			var elapse func(d time.Duration)
			settle := func(int64) {}
			silent := 1 // timeouts without a byte that end the session
			// ended reports whether the idle timeout has ended the session;
			// on a loop the sweep runs on its goroutine, and a session it
			// ended early fails the reads that follow.
			ended := func() bool {
				select {
				case res := <-g.done:
					g.done <- res
					return true
				default:
					return false
				}
			}
			if mode.opts.Loops >= 0 && !mode.opts.ForceCopy {
				r := newRelayLoops(t, 1, mode.opts)
				elapse, _ = testClock(r.loops.loops[0])
				g.start(context.Background(), r)
			} else {
				r := New(mode.opts)
				defer r.Close()
				dogs := watchdogsOf(t, g.relayA)
				g.start(context.Background(), r)
				w := <-dogs
				var since time.Duration
				elapse = func(d time.Duration) {
					if since += d; since >= idle {
						since = 0
						w.check()
					}
				}
				// A byte is counted just after the write that moved it,
				// which the upstream may read first: before the clock
				// moves on, it must be in the count the check reads.
				settle = func(n int64) { waitProgress(t, w, n) }
				silent = 2
				ended = func() bool { return w.s.cause.Load() == causeIdle } // checks abort before they return
			}
			const drops = 30 // three timeouts of bytes, one every tenth
			b := []byte{0}
			for i := range drops {
				elapse(idle / 10)
				b[0] = byte(i)
				if _, err := g.client.Write(b); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				if _, err := io.ReadFull(g.upstream, b); err != nil || b[0] != byte(i) {
					t.Fatalf("read %d: %v (byte %d); the idle timeout fired on a live session?", i, err, b[0])
				}
				settle(int64(i + 1))
				if ended() {
					t.Fatalf("the idle timeout ended the session after %d bytes, one every tenth of it", i+1)
				}
			}
			for range silent - 1 {
				if elapse(idle); ended() {
					t.Fatal("the idle timeout ended the session within one timeout of the last byte")
				}
			}
			elapse(idle)
			if res := g.wait(t); !errors.Is(res.err, ErrIdleTimeout) || res.st.ClientToUpstream != drops {
				t.Fatalf("Pipe: %v, %+v; want ErrIdleTimeout, %d bytes", res.err, res.st, drops)
			}
		})
	}
}

// testClock puts l on a clock of the test's, from 0, before any session:
// elapse moves it on by d and wakes the loop, which then sweeps and
// ripens as they come due; now reads it.
func testClock(l *loop) (elapse func(d time.Duration), now func() time.Duration) {
	c := new(atomic.Int64)
	l.testNow.Store(c)
	elapse = func(d time.Duration) {
		c.Add(int64(d))
		l.mu.Lock()
		l.kick()
		l.mu.Unlock()
	}
	return elapse, func() time.Duration { return time.Duration(c.Load()) }
}
