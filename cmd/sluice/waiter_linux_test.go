package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitingClient returns a bare client accepted from a fresh listener, its
// peer, and the waiter, closed at cleanup, that the client waits in.
func waitingClient(t testing.TB) (*client, *net.TCPConn, *waiter) {
	t.Helper()
	l, f := bareAccepting(t)
	w, err := newWaiter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	c, peer := acceptBare(t, l, f)
	c.w = w
	return c, peer, w
}

// TestClientWaiter: with a waiter, a read with nothing to read and a write
// with no room wait there, within the deadline, as often as they have to
// (the socket registered once, re-armed after), and the socket never meets
// the runtime poller: it hands over bare, out of the waiter's epoll set,
// and keeps working.
func TestClientWaiter(t *testing.T) {
	t.Parallel()
	c, peer, w := waitingClient(t)
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of nothing: %v; want os.ErrDeadlineExceeded", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 3 { // ADD, then MOD each time
		go peer.Write([]byte{byte(i)})
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			t.Fatalf("read %d after a wait: %x, %v", i, b, err)
		}
	}
	big := make([]byte, 8<<20) // far more than the socket buffers take
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(big)
		wrote <- err
	}()
	if _, err := io.ReadFull(peer, make([]byte, len(big))); err != nil {
		t.Fatalf("reading a write that had to wait: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write that had to wait: %v", err)
	}
	if c.f != nil {
		t.Fatal("a read or write that waited registered the socket with the runtime poller")
	}
	w.mu.Lock()
	parked := len(w.parked)
	w.mu.Unlock()
	if parked != 0 {
		t.Errorf("%d sessions parked after the reads; want 0", parked)
	}
	fd, err := c.takeFd()
	if err != nil {
		t.Fatal(err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != unix.ENOENT {
		t.Errorf("the taken socket in the waiter's epoll set: EPOLL_CTL_MOD %v; want ENOENT", err)
	}
	if n, err := unix.Write(fd, []byte{9}); n != 1 || err != nil {
		t.Fatalf("write on the taken descriptor: %d, %v", n, err)
	}
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte{10})
	b := make([]byte, 1)
	if n, err := unix.Read(fd, b); n != 1 || err != nil || b[0] != 10 {
		t.Fatalf("read on the taken descriptor: %d %x, %v", n, b, err)
	}
	unix.Close(fd)
}

// TestWaiterClose: closing the waiter ends a wait in progress and refuses
// later ones with net.ErrClosed, deadline or not.
func TestWaiterClose(t *testing.T) {
	t.Parallel()
	c, _, w := waitingClient(t)
	res := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		res <- err
	}()
	w.close()
	select {
	case err := <-res:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read while the waiter closed: %v; want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a wait outlived its waiter")
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after the waiter closed: %v; want net.ErrClosed", err)
	}
	w.close() // twice: nothing
}

// TestDeadlineHeap: pops come earliest first, and prune keeps exactly the
// deadlines of waits still parked, in heap order.
func TestDeadlineHeap(t *testing.T) {
	t.Parallel()
	var h deadlineHeap
	parked := map[uint64]*client{}
	for i := range uint64(200) {
		at := int64((i * 7919) % 211) // distinct, out of order
		h.push(deadline{at: at, id: i + 1})
		if i%3 == 0 {
			parked[i+1] = &client{}
		} else if i%3 == 1 {
			parked[1000+i] = &client{} // parked again since, under a new id: stale
		}
	}
	h.prune(parked)
	want := 0
	for id := range parked {
		if id < 1000 {
			want++
		}
	}
	if len(h) != want {
		t.Fatalf("prune kept %d deadlines; want %d", len(h), want)
	}
	last := int64(-1)
	for len(h) > 0 {
		d := h.pop()
		if d.at < last {
			t.Fatalf("popped %d after %d", d.at, last)
		}
		if parked[d.id] == nil {
			t.Fatalf("prune kept the stale deadline of wait %d", d.id)
		}
		last = d.at
	}
}

// TestShutdownWithoutWaiter: a server whose waiter could not be made, with
// no handshake timeout, still ends a handshake that stalls between greeting
// and request when its drain times out, so that the shutdown returns. Its
// bare clients wait in package os's poller, which nothing else would wake.
func TestShutdownWithoutWaiter(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "127.0.0.1:0", "--handshake-timeout", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = nxdomainResolver(t)
	cfg.noWaiter = true
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	if !inst.srv.bareSockets || inst.srv.waiter != nil {
		t.Fatalf("bare sockets %v, waiter %v; want bare sockets without a waiter", inst.srv.bareSockets, inst.srv.waiter)
	}
	c := dialSluice(t, inst.addrs()[0])
	mustWrite(t, c, []byte{5, 1, 0})
	expect(t, c, []byte{5, 0}) // the session now waits for its request
	done := make(chan struct{})
	go func() {
		inst.shutdown(100 * time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown still waiting 10 s after a 100 ms drain: the stalled handshake was never ended")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client after the shutdown: %d, %v; want its connection closed", n, err)
	}
}

// BenchmarkDialWatch is what watching a client costs a dial that waits
// (client.dialing, client.dialed). "registered": a dial that lasts past
// waiter.watchAfter, with the socket's registration and, when the relay
// takes it, its removal (forget), which an unwatched session whose
// handshake never waited does without. "unregistered": a dial that ends
// before, as one to a machine milliseconds away does.
func BenchmarkDialWatch(b *testing.B) {
	for _, bc := range []struct {
		name  string
		after time.Duration
	}{{"registered", -1}, {"unregistered", defaultWatchAfter}} {
		b.Run(bc.name, func(b *testing.B) {
			c, _, w := waitingClient(b)
			w.watchAfter = bc.after
			abort := func() {}
			b.ReportAllocs()
			for b.Loop() {
				w.watch(c, abort)
				if c.dialed(nil) != nil {
					b.Fatal("dialed")
				}
				if c.waited {
					w.forget(c)
				}
			}
		})
	}
}
