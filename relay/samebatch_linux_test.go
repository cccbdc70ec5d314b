//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoopRoomInSameBatchAsReset: a loop's session holds bytes for an
// upstream that took nothing more (its socket answered EAGAIN) when the
// client resets, and upstream then reads all that reached it, which makes
// room; both events, the client's EPOLLERR first, reach the loop in one
// batch. The session ends with the reset (the client cut its stream short),
// but the loop must first use the room the batch reports: it ran the flow
// at the client's event, before the upstream's EPOLLOUT was recorded, and
// ended it without writing a byte more. The loop is held inside a second
// session's done while both events come, so that they wait for it in one
// batch, in that order.
func TestLoopRoomInSameBatchAsReset(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		if mode.goroutines() {
			continue
		}
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := mode.relay(t)
			g, silent, toSilent, loud, fromLoud, label := stalledRig(t, "client")
			g.startAsync(context.Background(), r)
			bound := mode.bound(t, silent, toSilent)
			sent := make(chan error, 1)
			go func() {
				_, err := loud.Write(make([]byte, 64<<20))
				sent <- err
			}()
			waitQueued(t, fromLoud, bound+1) // the relay holds all it can

			release := holdLoop(t, r)
			defer release()

			loud.SetLinger(0)
			loud.Close() // the reset: its EPOLLERR waits for the loop
			<-sent
			waitState(t, fromLoud, tcpClose)
			// upstream reads all that reached it, relayB's send queue
			// included: room, whose EPOLLOUT waits behind the reset's.
			got := 0
			buf := make([]byte, 64<<10)
			for end := time.Now().Add(safety); ; {
				if q := queued(t, silent); q > 0 {
					n, err := silent.Read(buf[:min(q, len(buf))])
					if err != nil {
						t.Fatal(err)
					}
					got += n
					continue
				}
				if unsent(t, toSilent) == 0 {
					break
				}
				if time.Now().After(end) {
					t.Fatal("relayB's send queue never drained")
				}
				runtime.Gosched()
			}
			release()
			res := g.wait(t)
			if !errors.Is(res.err, syscall.ECONNRESET) || !strings.HasPrefix(res.err.Error(), label) {
				t.Fatalf("session: %v; want ECONNRESET labelled %q", res.err, label)
			}
			if res.st.ClientToUpstream <= int64(got) {
				t.Errorf("the relay wrote %d bytes toward upstream, all of them before the batch (upstream had read %d): it ended the session without using the room the batch reported", res.st.ClientToUpstream, got)
			}
		})
	}
}

// unsent is c's send queue: bytes not yet acknowledged by its peer
// (SIOCOUTQ).
func unsent(t *testing.T, c *net.TCPConn) int { return ioctlInt(t, c, unix.SIOCOUTQ) }

// holdLoop holds r's one event loop goroutine inside the done of a second
// session until release (which may be called more than once): events that
// come meanwhile wait in its epoll set, to be harvested in the order they
// came, in one batch.
func holdLoop(t *testing.T, r *Relay) (release func()) {
	t.Helper()
	g := newRig(t)
	entered, held := make(chan struct{}), make(chan struct{})
	r.Start(context.Background(), g.relayA, g.relayB, func(Stats, error) {
		close(entered)
		<-held
	})
	roundTrip(t, g)
	g.client.CloseWrite()
	g.upstream.CloseWrite()
	<-entered
	var once sync.Once
	return func() { once.Do(func() { close(held) }) }
}
