//go:build linux

package relay

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestPipeHalfCloseTowardResetAfterFIN: the client sends its bytes and its
// FIN, then resets, while the relay still holds bytes for an upstream that
// reads slowly; then upstream, which sent nothing, half-closes. Passing that
// FIN on meets the client's socket gone (shutdown answers ENOTCONN, the
// reset's EPIPE pending or taken already): the client's stream is whole,
// and its peer, which sent all of it, reads nothing more, so the direction
// toward it is over. Upstream must still get every byte the client sent,
// then EOF (the session ended at the failed half-close, dropping them and
// resetting upstream, on the event loops), and the session end with the
// reset, labelled client->upstream. On every path; the test waits until
// the relay met upstream's FIN before upstream reads: on a loop, through a
// second session on the same loop whose byte comes after that FIN; on the
// goroutine path, until closeWrite began (testHookCloseWrite).
func TestPipeHalfCloseTowardResetAfterFIN(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := mode.relay(t)
			g, silent, toSilent, loud, fromLoud, label := stalledRig(t, "client")
			g.startAsync(context.Background(), r)
			n := int64(mode.bound(t, silent, toSilent) + 256<<10)
			up := sendAsync(newPattern(41), loud, n, 64<<10) // then CloseWrite
			waitState(t, fromLoud, tcpCloseWait)             // every byte and the FIN are in
			s := <-up
			if s.err != nil {
				t.Fatal(s.err)
			}
			loud.SetLinger(0)
			loud.Close() // a reset
			waitState(t, fromLoud, tcpClose)
			if queued(t, fromLoud) == 0 {
				t.Fatal("the relay read all the client sent before upstream read any: nothing tested")
			}

			var shut atomic.Int32
			closeWrites.Store(fromLoud, &shut)
			defer closeWrites.Delete(fromLoud)
			if err := silent.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if mode.goroutines() {
				for end := time.Now().Add(safety); shut.Load() == 0; runtime.Gosched() {
					if time.Now().After(end) {
						t.Fatal("the upstream->client direction never passed upstream's FIN on")
					}
				}
			} else {
				// upstream's FIN is in before the second session's byte:
				// the loop, reading its events in order, met it first.
				waitState(t, toSilent, tcpCloseWait)
				g2 := newRig(t)
				g2.startAsync(context.Background(), r)
				roundTrip(t, g2)
				g2.client.Close()
				g2.upstream.Close()
				g2.wait(t)
			}

			got := make(chan sent, 1)
			go func() {
				m, sum, err := drain(silent)
				if err == nil && m != n {
					err = errors.New("short")
				}
				got <- sent{sum, err}
			}()
			res := g.wait(t)
			if lingeredZero(t, toSilent) {
				t.Error("the relay set SO_LINGER 0 on the socket toward upstream, whose stream was whole")
			}
			g.relayA.Close() // the caller's close
			g.relayB.Close()
			if d := <-got; d.err != nil || d.sum != s.sum {
				t.Fatalf("upstream's read: %v, the same bytes %v; want all %d the client sent, then EOF", d.err, d.sum == s.sum, n)
			}
			if !errors.Is(res.err, syscall.EPIPE) || !strings.Contains(res.err.Error(), label) {
				t.Fatalf("session: %v; want EPIPE labelled %q", res.err, label)
			}
			if res.st.ClientToUpstream != n {
				t.Errorf("Stats %+v; want %d bytes client->upstream", res.st, n)
			}
		})
	}
}
