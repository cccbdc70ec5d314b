//go:build linux

package relay

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGoPathHandOffNoSecondShutdown: an event loop passes one direction's
// EOF on, then hands the session to the goroutine path (no pipe for the
// answer, or splice refused from the answering socket). The goroutine path
// must not read that EOF again and half-close the destination a second
// time: it used to, and only closeWrite's tolerance of the ENOTCONN kept
// the session alive. The finished direction's destination gets no
// half-close on the goroutine path, the answering direction's exactly one.
// Not parallel: it sets a package hook.
func TestGoPathHandOffNoSecondShutdown(t *testing.T) {
	for _, why := range []string{"no pipe", "refused", "loop refused"} {
		for _, first := range []string{"client", "upstream"} {
			t.Run(why+"/"+first+" first", func(t *testing.T) {
				r := newRelayLoops(t, 1, Options{})
				fromSide := sideClient
				if first == "upstream" {
					fromSide = sideUpstream
				}
				if why != "no pipe" {
					r.loops.loops[0].refuse[1-fromSide] = unix.EINVAL
				}
				if why == "refused" {
					r.refuseSplice = unix.EINVAL
				}
				g := newRig(t)
				var mu sync.Mutex
				shut := map[*net.TCPConn]int{}
				testHookCloseWrite = func(dst *net.TCPConn) {
					mu.Lock()
					defer mu.Unlock()
					if dst == g.relayA || dst == g.relayB {
						shut[dst]++
					}
				}
				defer func() { testHookCloseWrite = nil }()
				g.startAsync(context.Background(), r)

				from, to := g.client, g.upstream
				fromDst, toDst := g.relayB, g.relayA // the relay's sockets each direction writes
				if first == "upstream" {
					from, to = g.upstream, g.client
					fromDst, toDst = g.relayA, g.relayB
				}
				if _, err := from.Write([]byte("req")); err != nil {
					t.Fatal(err)
				}
				from.CloseWrite()
				if got, err := io.ReadAll(to); err != nil || string(got) != "req" {
					t.Fatalf("read %q, %v; want \"req\" then EOF", got, err)
				}
				if why == "no pipe" {
					r.pipes.refuse.Store(true)
					r.pipes.trim()
				}
				if _, err := to.Write([]byte("resp")); err != nil {
					t.Fatal(err)
				}
				to.CloseWrite()
				if got, err := io.ReadAll(from); err != nil || string(got) != "resp" {
					t.Fatalf("read %q, %v; want \"resp\" then EOF", got, err)
				}
				if res := g.wait(t); res.err != nil {
					t.Fatalf("session: %v, %+v; want nil", res.err, res.st)
				}
				mu.Lock()
				defer mu.Unlock()
				if shut[fromDst] != 0 || shut[toDst] != 1 {
					t.Errorf("goroutine path half-closed the finished direction's destination %d times, the answer's %d; want 0 and 1",
						shut[fromDst], shut[toDst])
				}
			})
		}
	}
}
