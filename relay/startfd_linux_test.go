package relay

import (
	"context"
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStartFds relays sessions whose sockets are bare descriptors, as a
// raw accept and tune.Options.DialFd make them: on a loop (with and without
// TakeSockets, which has nothing left to take), on a loop that is closing
// (the plain path from the loop's descriptors) and with no loop at all (the
// goroutine path). Each ends once normally and once by its context; either
// way both sockets are closed in the process before done runs, and the
// peers read EOF. The same runs with the upstream as a conn (StartFdConn),
// which the Relay closes only where it took it over (a loop, TakeSockets).
func TestStartFds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		loops   int
		take    bool
		closing bool
	}{
		{"loop", 1, false, false},
		{"loop-take", 1, true, false},
		{"loop-closing", 1, true, true},
		{"goroutines", -1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r *Relay
			if tc.loops > 0 {
				r = newRelayLoops(t, tc.loops, Options{TakeSockets: tc.take})
			} else {
				r = New(Options{Loops: tc.loops})
				t.Cleanup(func() { r.Close() })
			}
			if tc.closing {
				l := r.loops.loops[0]
				l.close()
				<-l.finished
			}
			for _, cancelled := range []bool{false, true} {
				startFdSession(t, r, cancelled, true)
				startFdSession(t, r, cancelled, false)
			}
		})
	}
}

var errStillOpen = errors.New("a socket still open in the process when done ran")

// startFdSession runs one StartFds session over a rig, or with
// bareUpstream false one StartFdConn session, and checks it.
func startFdSession(t *testing.T, r *Relay, cancelled, bareUpstream bool) {
	t.Helper()
	g := newRig(t)
	conns := []*net.TCPConn{g.relayA}
	if bareUpstream || r.opts.TakeSockets && r.onLoop() && !r.loops.loops[0].closed.Load() {
		conns = append(conns, g.relayB) // the Relay's to close
	}
	inodes := socketInodes(t, conns...)
	fds := [2]int{-1, -1}
	for i, c := range []*net.TCPConn{g.relayA, g.relayB} {
		if i == 1 && !bareUpstream {
			break
		}
		fd, err := dupFd(c) // the bare descriptors
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		fds[i] = fd
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := func(st Stats, err error) {
		// Checked here, before the caller closes anything.
		if open := openInodes(t, inodes); len(open) > 0 {
			err = errors.Join(err, errStillOpen)
		}
		if !bareUpstream {
			g.relayB.Close() // the caller's, closed in done (nothing if taken over)
		}
		g.done <- pipeResult{st, err}
	}
	if bareUpstream {
		r.StartFds(ctx, fds[0], fds[1], done)
	} else {
		r.StartFdConn(ctx, fds[0], g.relayB, done)
	}
	res := roundTripAndEnd(t, g, cancel, cancelled)
	if errors.Is(res.err, errStillOpen) {
		t.Errorf("cancelled=%v: %v", cancelled, res.err)
	}
	checkRoundTripEnd(t, g, res, cancelled)
}

// TestFileConnKeepsOptions: a bare descriptor handed back to package net
// (the plain path) keeps its TCP_NODELAY and keepalive settings, which
// net.FileConn would reset to Go's defaults.
func TestFileConnKeepsOptions(t *testing.T) {
	t.Parallel()
	for _, keepalive := range []bool{false, true} {
		c, peer := tcpPair(t)
		defer peer.Close()
		want := map[[2]int]int{
			{unix.IPPROTO_TCP, unix.TCP_NODELAY}:  0,
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE}:  0,
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}: 77,
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT}:  3,
		}
		if keepalive {
			want[[2]int{unix.SOL_SOCKET, unix.SO_KEEPALIVE}] = 1
		}
		fd, err := dupFd(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		for k, v := range want {
			if err := unix.SetsockoptInt(fd, k[0], k[1], v); err != nil {
				t.Fatal(err)
			}
		}
		a, err := FileConn(fd)
		if err != nil {
			t.Fatal(err)
		}
		afd, err := rawFd(a)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			if got, err := unix.GetsockoptInt(afd, k[0], k[1]); err != nil || got != v {
				t.Errorf("keepalive=%v: option %v = %d, %v after adopting; want %d", keepalive, k, got, err, v)
			}
		}
		a.Close()
	}
}
