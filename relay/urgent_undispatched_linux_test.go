//go:build linux

package relay

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestLoopUrgentMarkBeforePRIDispatched: an event loop splices a client's
// bytes on an event harvested before the urgent byte came (its mask has no
// EPOLLPRI), while the urgent byte, the bytes behind it and the client's FIN
// have all come in since. The first splice stops at the mark having moved at
// least as many bytes as the pipe has slots, so the loop splices again, and
// at the mark, with the FIN in, splice answers 0. f.urgent is still false
// (the EPOLLPRI edge waits in the epoll ready list), so the loop takes the 0
// for EOF, passes the FIN upstream and drops everything behind the mark.
//
// The loop is held still, deterministically, inside the done callbacks of
// two other sessions on the same (single) loop: while the first blocks, the
// second's FIN and then the client's first bytes arrive, so the next harvest
// holds [second session's FIN, client's EPOLLIN] in that order; the second
// callback then blocks after the harvest, before the client's event is
// dispatched, while the urgent byte, the rest and the FIN arrive.
func TestLoopUrgentMarkBeforePRIDispatched(t *testing.T) {
	r := New(Options{Loops: 1})
	defer r.Close()
	deadline := time.Now().Add(safety)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			runtime.Gosched()
		}
	}
	// Session A, the one under test.
	a := newRig(t)
	aDone := make(chan error, 1)
	r.Start(context.Background(), a.relayA, a.relayB, func(_ Stats, err error) { aDone <- err })
	if _, err := a.client.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a.upstream, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}

	// Two blockers whose upstream->client direction is done already.
	type blocker struct {
		g       *rig
		entered chan struct{}
		release chan struct{}
	}
	var bs [2]blocker
	for i := range bs {
		b := &bs[i]
		b.g = newRig(t)
		b.entered, b.release = make(chan struct{}), make(chan struct{})
		r.Start(context.Background(), b.g.relayA, b.g.relayB, func(Stats, error) {
			close(b.entered)
			<-b.release
		})
		b.g.upstream.CloseWrite()
		if _, err := io.ReadAll(b.g.client); err != nil { // its FIN passed on
			t.Fatal(err)
		}
	}
	defer func() {
		for i := range bs {
			select {
			case <-bs[i].release:
			default:
				close(bs[i].release)
			}
		}
	}()

	// Block the loop in the first blocker's done.
	bs[0].g.client.CloseWrite()
	<-bs[0].entered

	// Queue, in order: the second blocker's FIN, then A's first bytes.
	bs[1].g.client.CloseWrite()
	// Its relay side sent its own FIN already (FIN_WAIT2): the client's
	// FIN closes it (TIME_WAIT takes over; the socket reads TCP_CLOSE).
	waitFor("blocker FIN", func() bool { s := tcpState(t, bs[1].g.relayA); return s == tcpClose || s == tcpCloseWait })
	d1 := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes: not fewer than a 1 MiB pipe's 256 slots
	if _, err := a.client.Write(d1); err != nil {
		t.Fatal(err)
	}
	waitFor("A's first bytes", func() bool { return queued(t, a.relayA) == len(d1) })

	// The loop harvests both and blocks again in the second blocker's
	// done, before A's event (EPOLLIN only) is dispatched.
	close(bs[0].release)
	<-bs[1].entered

	send(t, a.client, "X", syscall.MSG_OOB)
	d2 := []byte("the rest, behind the urgent mark")
	if _, err := a.client.Write(d2); err != nil {
		t.Fatal(err)
	}
	a.client.CloseWrite()
	waitFor("A's FIN", func() bool { return tcpState(t, a.relayA) == tcpCloseWait })
	close(bs[1].release)

	got, err := io.ReadAll(a.upstream)
	if err != nil {
		t.Fatalf("upstream read: %v", err)
	}
	a.upstream.CloseWrite()
	want := append(append([]byte{}, d1...), d2...)
	if !bytes.Equal(got, want) {
		t.Errorf("upstream got %d bytes ending %q followed by a FIN; want %d bytes ending %q (the bytes behind the urgent mark were dropped)",
			len(got), got[max(len(got)-20, 0):], len(want), want[len(want)-20:])
	}
	select {
	case err := <-aDone:
		t.Logf("session A ended: %v", err)
	case <-time.After(safety):
		t.Error("session A did not end")
	}
}
