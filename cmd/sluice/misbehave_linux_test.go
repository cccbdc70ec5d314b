package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// limiterEmpty reports whether l counts no session: no global place, no
// client IP and no user.
func limiterEmpty(l *limiter) bool {
	if l.active.Load() != 0 {
		return false
	}
	for i := range l.ips {
		sh := &l.ips[i]
		sh.mu.Lock()
		n := len(sh.n)
		sh.mu.Unlock()
		if n != 0 {
			return false
		}
	}
	l.users.mu.Lock()
	defer l.users.mu.Unlock()
	return len(l.users.n) == 0
}

// parkedCount is how many waits and watches w holds (none without one).
func parkedCount(w *waiter) int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.parked)
}

// send writes b to c.
func send(c *net.TCPConn, b []byte) error {
	_, err := c.Write(b)
	return err
}

// recvWant reads len(want) bytes from c and compares them with want.
func recvWant(c *net.TCPConn, want ...byte) error {
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading %x: %w (got %x)", want, err, got)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("got %x, want %x", got, want)
	}
	return nil
}

// recvReply reads the method reply and the reply to a CONNECT (IPv4 BND)
// and checks its REP.
func recvReply(c *net.TCPConn, rep byte) error {
	// <- 5 0, then 5 REP 0 1 and BND.ADDR, BND.PORT
	got := make([]byte, 2+4+4+2)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading the reply: %w (got %x)", err, got)
	}
	if !bytes.Equal(got[:6], []byte{5, 0, 5, rep, 0, 1}) {
		return fmt.Errorf("reply %x; want REP %#x", got, rep)
	}
	return nil
}

// recvClosed checks that the server closes c with nothing more to read.
func recvClosed(c *net.TCPConn) error {
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("read %d, %v; want the server's close", n, err)
	}
	return nil
}

// reset closes c with a reset.
func reset(c *net.TCPConn) error {
	c.SetLinger(0)
	return c.Close()
}

// misbehave is one way for a client to leave or stall at one moment of its
// session, on c, a fresh connection to sluice: it returns what went wrong.
type misbehave struct {
	name string
	run  func(c *net.TCPConn) error
}

// misbehaviours are clients that leave or stall at each moment of a
// session: echo answers, hole never accepts (its SYNs dropped) and closed
// refuses.
func misbehaviours(echo, hole, closed netip.AddrPort) []misbehave {
	halfRequest := connectReq(echo)[:6] // greeting, then VER CMD RSV
	return []misbehave{
		{"close-at-once", func(c *net.TCPConn) error { return c.Close() }},
		{"reset-at-once", reset},
		{"half-greeting-close", func(c *net.TCPConn) error { return errors.Join(send(c, []byte{5}), c.Close()) }},
		{"half-greeting-reset", func(c *net.TCPConn) error { return errors.Join(send(c, []byte{5, 1}), reset(c)) }},
		{"bad-version", func(c *net.TCPConn) error { return errors.Join(send(c, []byte{4, 1, 0}), recvClosed(c)) }},
		{"greeted-close", func(c *net.TCPConn) error {
			return errors.Join(send(c, []byte{5, 1, 0}), recvWant(c, 5, 0), c.Close())
		}},
		{"half-request-reset", func(c *net.TCPConn) error {
			return errors.Join(send(c, halfRequest), recvWant(c, 5, 0), reset(c))
		}},
		{"half-request-stall", func(c *net.TCPConn) error { // until the handshake timeout
			return errors.Join(send(c, halfRequest), recvWant(c, 5, 0), recvClosed(c))
		}},
		{"silent-stall", recvClosed},
		{"pending-dial-close", func(c *net.TCPConn) error { return errors.Join(send(c, connectReq(hole)), c.Close()) }},
		{"pending-dial-reset", func(c *net.TCPConn) error { return errors.Join(send(c, connectReq(hole)), reset(c)) }},
		{"refused-dial", func(c *net.TCPConn) error {
			return errors.Join(send(c, connectReq(closed)), recvReply(c, 5), recvClosed(c))
		}},
		{"relayed-close", func(c *net.TCPConn) error {
			return errors.Join(send(c, append(connectReq(echo), 'x')), recvReply(c, 0), recvWant(c, 'x'), c.Close())
		}},
		{"relayed-reset", func(c *net.TCPConn) error {
			return errors.Join(send(c, append(connectReq(echo), 'x')), recvReply(c, 0), recvWant(c, 'x'), reset(c))
		}},
		{"relayed-half-close", func(c *net.TCPConn) error {
			return errors.Join(send(c, append(connectReq(echo), 'y')), c.CloseWrite(), recvReply(c, 0), recvWant(c, 'y'), recvClosed(c))
		}},
	}
}

// TestMisbehavingClientsGiveBack: clients that leave or stall at every
// moment of the accept path (at once, inside the greeting, inside the
// request, during a pending dial, after a refused one, while relayed), by
// a close or a reset, 8 of each at once, give back every place they held
// under the limits and every wait in the waiter, and their sockets are
// closed; with bare sockets and with package net's.
func TestMisbehavingClientsGiveBack(t *testing.T) {
	echo := startEcho(t)
	hole := fullListener(t)
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := cl.Addr().(*net.TCPAddr).AddrPort()
	cl.Close()
	for _, mode := range []string{"bare", "net-sockets"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"--handshake-timeout", "1s", "--max-sessions", "100000", "--max-sessions-per-ip", "100000", "--dial-timeout", "20s"}
			if mode == "net-sockets" {
				args = append(args, "--net-sockets")
			}
			var logs syncBuffer
			// The waiter watches a pending dial's client at once.
			addr, inst := startSluiceConfig(t, func(cfg *config) { cfg.watchAfter = -1 }, &logs, args...)
			srv := inst.srv
			before := countSockets(t)
			const rounds = 8 // of each, all at once: some 300 sockets in this process
			var wg sync.WaitGroup
			for _, m := range misbehaviours(echo, hole, closed) {
				for i := range rounds {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := net.DialTimeout("tcp", addr, 10*time.Second)
						if err != nil {
							t.Errorf("%s %d: %v", m.name, i, err)
							return
						}
						defer c.Close()
						c.SetDeadline(time.Now().Add(10 * time.Second))
						if err := m.run(c.(*net.TCPConn)); err != nil {
							t.Errorf("%s %d: %v", m.name, i, err)
						}
					}()
				}
			}
			wg.Wait()
			if !waitFor(10*time.Second, func() bool { return limiterEmpty(srv.limits) && parkedCount(srv.waiter) == 0 }) {
				t.Errorf("after every client left: %d sessions counted, %d waits parked; want none", srv.limits.active.Load(), parkedCount(srv.waiter))
			}
			if !waitFor(10*time.Second, func() bool { return countSockets(t) <= before }) {
				t.Errorf("%d sockets open after every client left; want %d as before", countSockets(t), before)
			}
		})
	}
}

// TestWaiterFarDeadline: a deadline centuries away (a handshake timeout of
// 2,200,000 hours, past 2262, where UnixNano overflows) is far, not
// passed: a read that waits on it waits for its bytes. It used to time out
// at once, the overflowed deadline negative.
func TestWaiterFarDeadline(t *testing.T) {
	t.Parallel()
	c, peer, w := waitingClient(t)
	c.SetDeadline(time.Now().Add(2_200_000 * time.Hour))
	got := make(chan error, 1)
	b := make([]byte, 1)
	go func() {
		_, err := c.Read(b)
		got <- err
	}()
	var err error
	if !waitFor(10*time.Second, func() bool {
		select {
		case err = <-got:
			return true
		default:
			return parkedCount(w) == 1
		}
	}) {
		t.Fatal("the read neither waited nor returned")
	}
	if err != nil {
		t.Fatalf("read with a deadline centuries away, before any byte: %v; want it to wait", err)
	}
	mustWrite(t, peer, []byte{7}) // -> the byte it waits for
	if err := <-got; err != nil || b[0] != 7 {
		t.Fatalf("read: %x, %v; want 07", b, err)
	}
}

// TestHandshakeTimeoutCenturies: --handshake-timeout 2200000h (251 years)
// lets a client that waits for the method reply before its request (as
// curl does) through; its session used to be closed the moment it waited.
func TestHandshakeTimeoutCenturies(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	addr, inst := startSluice(t, "--handshake-timeout", "2200000h")
	c := dialSluice(t, addr)
	req := connectReq(echo)
	mustWrite(t, c, req[:3]) // -> greeting
	expect(t, c, []byte{5, 0})
	// The session waits for the request now, or has ended.
	srv := inst.srv
	if !waitFor(10*time.Second, func() bool { return parkedCount(srv.waiter) == 1 || srv.limits.active.Load() == 0 }) {
		t.Fatal("the session neither waits for its request nor has ended")
	}
	mustWrite(t, c, append(req[3:], 'z')) // -> request, and a byte for the target
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("reply %#x; want 0", rep)
	}
	expect(t, c, []byte{'z'})
}

// TestWaiterManyDeadlines: behind 10 clients waiting on deadlines an hour
// away, 100 more wait in the same waiter with deadlines spread out of
// order over 300 ms; every other one is sent a byte, reads it, and waits
// again with a deadline earlier than any it had. Each of the 100 waits
// ends, with its byte or at its deadline, long before the hour: none is
// lost in the heap, after a wake by an event, or behind a later deadline
// pushed first. Closing the waiter then ends the 10.
func TestWaiterManyDeadlines(t *testing.T) {
	t.Parallel()
	l, f := bareAccepting(t)
	w, err := newWaiter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	const far, n = 10, 100
	type result struct {
		i   int
		err error
	}
	results := make(chan result, far+n)
	wait := func(i int, c *client, deadline time.Time, again bool) {
		b := make([]byte, 1)
		c.SetDeadline(deadline)
		_, err := c.Read(b)
		if again {
			if err != nil || b[0] != byte(i) {
				results <- result{i, fmt.Errorf("first read: %x, %v; want %02x", b, err, byte(i))}
				return
			}
			c.SetDeadline(deadline.Add(-100 * time.Millisecond))
			_, err = c.Read(b)
		}
		results <- result{i, err}
	}
	for i := range far {
		c, _ := acceptBare(t, l, f)
		c.w = w
		go wait(i, c, time.Now().Add(time.Hour), false)
	}
	if !waitFor(10*time.Second, func() bool { return parkedCount(w) == far }) {
		t.Fatalf("%d of %d clients parked", parkedCount(w), far)
	}
	start := time.Now()
	for i := range n {
		c, peer := acceptBare(t, l, f)
		c.w = w
		go wait(far+i, c, start.Add(time.Duration(100+(i*37)%200)*time.Millisecond), i%2 == 1)
		if i%2 == 1 {
			mustWrite(t, peer, []byte{byte(far + i)})
		}
	}
	for range n {
		select {
		case r := <-results:
			if r.i < far || !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Errorf("client %d: %v; want its deadline", r.i, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a wait with a deadline under a second still waits 20 s later")
		}
	}
	w.close()
	for range far {
		if r := <-results; r.i >= far || !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("client %d, an hour from its deadline, as the waiter closed: %v; want net.ErrClosed", r.i, r.err)
		}
	}
}
