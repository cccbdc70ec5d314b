package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoopHandOffAdoptFails: a session of sockets the loop took over
// (TakeSockets) that must go on on the goroutine path (no pipe to be had)
// while no descriptor can be made for package net's duplicate (EMFILE)
// fails mid-stream, both streams cut short: both far peers read a reset,
// not a FIN that would pass for the end of a whole stream, whether its
// socket's duplicate failed (closed inside FileConn) or the other's (it was
// closed as any conn): a peer whose socket held no unread byte read an EOF
// before. Not parallel: it lowers the process's descriptor limit, and no
// other test may open a file meanwhile.
func TestLoopHandOffAdoptFails(t *testing.T) {
	// The client's descriptor goes back first: with no descriptor to
	// spare both duplicates fail, with one the upstream's does, and the
	// client's conn is closed. The byte that wakes the loop stays unread
	// in its source's socket, which that alone resets on close: sent from
	// the other side, it leaves the socket under test without one.
	for _, tc := range []struct {
		name  string
		spare uint64
		from  int
	}{
		{"both fail", 0, sideClient},
		{"the upstream's fails", 1, sideClient},
		{"the upstream's fails, the client's closed", 1, sideUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) { handOffAdoptFails(t, tc.spare, tc.from) })
	}
}

func handOffAdoptFails(t *testing.T, spare uint64, from int) {
	r := newRelayLoops(t, 1, Options{TakeSockets: true})
	g := newRig(t)
	// A hole below the session's descriptors, made before the loop takes
	// them (TakeSockets duplicates them at the lowest free numbers).
	hole := openHole(t)
	g.startAsync(context.Background(), r)
	roundTrip(t, g)
	r.pipes.refuse.Store(true) // the next read hands the session off
	restore := noFileAbove(t, hole, spare)
	defer restore()
	if _, err := [2]*net.TCPConn{g.client, g.upstream}[from].Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	res := g.wait(t)
	restore()
	if !errors.Is(res.err, unix.EMFILE) {
		t.Fatalf("session ended with %v; want EMFILE from the hand-off", res.err)
	}
	farPeersReset(t, g)
}

// TestStartFdsAdoptFails: StartFds without event loops wraps both bare
// descriptors in package net's conns first; when it cannot (EMFILE), the
// session fails before the relay moved a byte, though its caller may have
// (a reply, pipelined bytes): both far peers must read a reset, not a FIN
// that would pass for the other's end (both read an EOF before), whether
// the client's duplicate failed (and the upstream's descriptor was closed
// untried) or the upstream's (and the client's conn was closed). Not
// parallel: it lowers the process's descriptor limit.
func TestStartFdsAdoptFails(t *testing.T) {
	for spare, name := range []string{"both fail", "the upstream's fails"} {
		t.Run(name, func(t *testing.T) { startFdsAdoptFails(t, uint64(spare)) })
	}
}

func startFdsAdoptFails(t *testing.T, spare uint64) {
	r := New(Options{Loops: -1})
	defer r.Close()
	g := newRig(t)
	hole := openHole(t)
	fds := bareFds(t, g) // above the hole, or in a number the rig's conns freed
	restore := noFileAbove(t, hole, spare)
	defer restore()
	ended := make(chan error, 1)
	r.StartFds(context.Background(), fds[0], fds[1], func(_ Stats, err error) { ended <- err })
	var err error
	select {
	case err = <-ended:
	case <-time.After(safety):
		restore()
		t.Fatal("the session did not end")
	}
	restore()
	if !errors.Is(err, unix.EMFILE) {
		t.Fatalf("session ended with %v; want EMFILE", err)
	}
	farPeersReset(t, g)
}

// openHole opens a descriptor at the lowest free number, for noFileAbove:
// descriptors opened after it get higher numbers (or ones closed since).
func openHole(t *testing.T) int {
	t.Helper()
	hole, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return hole
}

// noFileAbove closes hole and sets the process's descriptor limit to hole
// plus spare: every number below the hole is open, and descriptors above
// it free none below the limit when they close, so the descriptor made
// after spare others fails with EMFILE. It returns the func that sets the
// limit back (call it as soon as the failure happened: the whole process,
// the test framework included, runs under the lowered limit until then).
func noFileAbove(t *testing.T, hole int, spare uint64) (restore func()) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	unix.Close(hole)
	low := lim
	low.Cur = uint64(hole) + spare
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
}

// farPeersReset checks that both far peers of g read a reset.
func farPeersReset(t *testing.T, g *rig) {
	t.Helper()
	for _, far := range []struct {
		name string
		c    io.Reader
	}{{"client", g.client}, {"upstream", g.upstream}} {
		if _, err := io.Copy(io.Discard, far.c); !errors.Is(err, unix.ECONNRESET) {
			t.Errorf("%s read to %v; want ECONNRESET", far.name, err)
		}
	}
}
