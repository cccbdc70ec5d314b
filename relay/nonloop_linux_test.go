//go:build linux

package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stream is a deterministic byte stream: byte i of seed's stream is always
// the same, so a receiver can check what it got against the sender's
// stream, prefix by prefix, without being told what was sent.
type stream struct {
	src *rand.ChaCha8
}

func newStream(seed uint64) *stream {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return &stream{src: rand.NewChaCha8(s)}
}

func (s *stream) next(b []byte) { s.src.Read(b) }

// sendRandom writes n bytes of seed's stream to c in writes of random sizes
// (1 byte to 192 KiB), then half-closes c. It returns the bytes written.
func sendRandom(c *net.TCPConn, seed uint64, n int64) (int64, error) {
	st, rnd := newStream(seed), rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 192<<10)
	var sent int64
	for sent < n {
		k := min(int64(1+rnd.IntN(len(buf))), n-sent)
		if rnd.IntN(4) == 0 {
			k = min(int64(1+rnd.IntN(100)), n-sent) // small writes too
		}
		st.next(buf[:k])
		w, err := c.Write(buf[:k])
		sent += int64(w)
		if err != nil {
			return sent, err
		}
	}
	return sent, c.CloseWrite()
}

// checkRandom reads c to EOF or an error in reads of random sizes and
// checks each byte against seed's stream: what came is a prefix of it,
// nothing lost, doubled or reordered before the last byte read. It
// returns the bytes read and the read error (nil at EOF); a byte that
// differs is reported as its offset.
func checkRandom(c *net.TCPConn, seed uint64) (int64, error) {
	st, rnd := newStream(seed), rand.New(rand.NewPCG(seed, 2))
	buf, want := make([]byte, 256<<10), make([]byte, 256<<10)
	var got int64
	for {
		n, err := c.Read(buf[:1+rnd.IntN(len(buf))])
		if n > 0 {
			st.next(want[:n])
			if i := mismatch(buf[:n], want[:n]); i >= 0 {
				return got, fmt.Errorf("byte %d differs from the stream sent", got+int64(i))
			}
			got += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// smallBuffers sets SO_SNDBUF or SO_RCVBUF (opt) to 64 KiB on the sockets of
// a listener or a dialer, so that the relay's writes into them come out
// short and meet EAGAIN often.
func smallBuffers(opt int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 64<<10) }); cerr != nil {
			return cerr
		}
		return err
	}
}

// newTightRig is newRig with small socket buffers on every socket, the
// relay's included.
func newTightRig(t testing.TB) *rig {
	t.Helper()
	lc := &net.ListenConfig{Control: smallBuffers(syscall.SO_RCVBUF)}
	d := &net.Dialer{Control: smallBuffers(syscall.SO_SNDBUF)}
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPairWith(t, lc, d)
	g.relayB, g.upstream = tcpPairWith(t, lc, d)
	for _, c := range []*net.TCPConn{g.client, g.relayA, g.relayB, g.upstream} {
		c.SetReadBuffer(64 << 10)
		c.SetWriteBuffer(64 << 10)
	}
	g.armSafety()
	return g
}

// checkPool fails the test when a pooled pipe holds a byte (it would
// leak one session's data into another), reports a size other than the
// kernel's, sits on the wrong list, or the pool holds more than its bound.
func checkPool(t testing.TB, pp *pipePool) {
	t.Helper()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if n := len(pp.free) + len(pp.short); n > pp.max {
		t.Errorf("pool holds %d pipes; its bound is %d", n, pp.max)
	}
	full := pp.full.Load()
	for i, list := range [][]*pipe{pp.free, pp.short} {
		for _, p := range list {
			if n, err := unix.IoctlGetInt(p.rfd, unix.TIOCINQ); err != nil || n != 0 || p.data != 0 {
				t.Errorf("pooled pipe holds %d bytes (%v), data %d; want an empty pipe", n, err, p.data)
			}
			if size, err := unix.FcntlInt(uintptr(p.rfd), unix.F_GETPIPE_SZ, 0); err != nil || size != p.size {
				t.Errorf("pooled pipe's size is %d (%v), the pool thinks %d", size, err, p.size)
			}
			if short := int64(p.size) < full; short != (i == 1) {
				t.Errorf("pipe of %d bytes (largest %d) on the %s list", p.size, full, [2]string{"full", "short"}[i])
			}
		}
	}
}

// nonLoopModes are the data paths that do not run on an event loop.
var nonLoopModes = []struct {
	name     string
	opts     Options
	refuse   bool // splice refused: the goroutine path falls back to copies
	spliced  bool
	fallback bool
}{
	{name: "goroutines", opts: Options{Loops: -1}, spliced: true},
	{name: "goroutines, one-page pipes", opts: Options{Loops: -1, PipeBytes: 4096, MaxIdlePipes: 1}, spliced: true},
	{name: "copy", opts: Options{ForceCopy: true}},
	{name: "copy, 1000-byte buffer", opts: Options{ForceCopy: true, CopyBufferBytes: 1000}},
	{name: "refused", opts: Options{Loops: -1}, refuse: true, fallback: true},
}

// TestNonLoopIntegrity pushes random amounts in writes of random
// sizes both ways at once through each path that is not an event loop,
// with small socket buffers everywhere so that writes come out short and
// meet EAGAIN, and checks every byte, the Stats, and that the session
// gave back every buffer and left only empty pipes in the pool.
func TestNonLoopIntegrity(t *testing.T) {
	t.Parallel()
	for _, mode := range nonLoopModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			if mode.refuse {
				r.refuseSplice = unix.EINVAL
			}
			for i := range 3 {
				seed := uint64(100 + 10*i)
				rnd := rand.New(rand.NewPCG(seed, 0))
				up, down := int64(rnd.IntN(3<<20)), int64(rnd.IntN(3<<20))
				if i == 0 {
					up = 0 // one direction carries nothing
				}
				g := newTightRig(t).start(context.Background(), r)
				type result struct {
					n   int64
					err error
				}
				sendUp, sendDown, atUp := make(chan result, 1), make(chan result, 1), make(chan result, 1)
				go func() { n, err := sendRandom(g.client, seed, up); sendUp <- result{n, err} }()
				go func() { n, err := sendRandom(g.upstream, seed+1, down); sendDown <- result{n, err} }()
				go func() { n, err := checkRandom(g.upstream, seed); atUp <- result{n, err} }()
				nc, err := checkRandom(g.client, seed+1)
				su, sd, au := <-sendUp, <-sendDown, <-atUp
				if err := errors.Join(err, su.err, sd.err, au.err); err != nil {
					t.Fatalf("session %d: %v", i, err)
				}
				if au.n != up || nc != down {
					t.Errorf("session %d: got %d and %d bytes; want %d and %d", i, au.n, nc, up, down)
				}
				res := g.wait(t)
				st := res.st
				if res.err != nil || st.ClientToUpstream != up || st.UpstreamToClient != down {
					t.Errorf("session %d: Pipe %v, %+v; want nil, %d and %d bytes", i, res.err, st, up, down)
				}
				if st.Spliced != mode.spliced || (st.SpliceCalls > 0) != mode.spliced || st.Fallback != mode.fallback || st.CopyCalls != 0 {
					t.Errorf("session %d: Stats %+v; want Spliced %v, SpliceCalls > 0 %v, Fallback %v, no CopyCalls",
						i, st, mode.spliced, mode.spliced, mode.fallback)
				}
				if n := r.bufsOut.Load(); n != 0 {
					t.Errorf("session %d: %d copy buffers held after Pipe returned", i, n)
				}
				checkPool(t, r.pipes)
			}
		})
	}
}

// idleForTest is the idle timeout of the sessions that end by it: long
// enough that a busy machine's scheduling never stalls a transfer that
// long before the test stops reading.
const idleForTest = 400 * time.Millisecond

// endings are the ways TestNonLoopEndAnyMoment ends a session early.
var endings = []string{"cancel", "client reset", "upstream reset", "client close", "idle"}

// TestNonLoopEndAnyMoment ends sessions in the middle of a transfer
// both ways, in every way a session can end early (its context, a reset
// of either side, a close with bytes unread, the idle timeout), at a
// random point. Whatever reached each side must be a prefix of what was
// sent, and the session must give back its buffers and leave only empty
// pipes pooled.
func TestNonLoopEndAnyMoment(t *testing.T) {
	t.Parallel()
	for _, mode := range nonLoopModes {
		for _, how := range endings {
			t.Run(mode.name+"/"+how, func(t *testing.T) {
				t.Parallel()
				opts, rounds := mode.opts, 4
				if how == "idle" {
					opts.IdleTimeout, rounds = idleForTest, 2
				}
				r := New(opts)
				defer r.Close()
				if mode.refuse {
					r.refuseSplice = unix.EINVAL
				}
				for i := range rounds {
					endMidTransfer(t, r, how, uint64(1000+10*i))
				}
			})
		}
	}
}

// TestNonLoopEndNoLeaks is TestNonLoopEndAnyMoment counting
// the process's pipe descriptors and goroutines, with no pipe pooled: both
// must be back where they were once the sessions ended. Not parallel.
func TestNonLoopEndNoLeaks(t *testing.T) {
	beforeFds, before := pipeFds(t), runtime.NumGoroutine()
	for _, mode := range nonLoopModes {
		for _, how := range endings {
			opts := mode.opts
			opts.MaxIdlePipes = -1
			if how == "idle" {
				opts.IdleTimeout = idleForTest
			}
			r := New(opts)
			if mode.refuse {
				r.refuseSplice = unix.EINVAL
			}
			endMidTransfer(t, r, how, 77)
			r.Close()
		}
	}
	if n := waitPipeFds(t, beforeFds); n != beforeFds {
		t.Errorf("%d pipe descriptors after the sessions; want %d", n, beforeFds)
	}
	var now int
	for end := time.Now().Add(safety); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("goroutines: %d before, %d after\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// endMidTransfer starts a session on r that moves seed's streams both ways,
// ends it as how says once a random amount reached the upstream, and
// checks what each side got and what the session gave back.
func endMidTransfer(t *testing.T, r *Relay, how string, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 7))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := newTightRig(t).start(ctx, r)
	const n = 8 << 20
	sent := make(chan error, 2)
	go func() { _, err := sendRandom(g.client, seed, n); sent <- err }()
	// The upstream sends a random amount, at least a byte (a client that
	// closes must have one unread to reset): the upstream->client
	// direction often passes its FIN on before the session ends. Either
	// way a client reset may come while the other direction waits to
	// write to an upstream that reads nothing, and nothing waits on the
	// client's socket: the reset watch sees it (it used to go unseen: run
	// alone under -race, "copy, 1000-byte buffer/client reset" hung 19
	// runs in 150, with the upstream sending without end).
	down := int64(1 + rand.New(rand.NewPCG(seed, 8)).IntN(2<<20))
	go func() { _, err := sendRandom(g.upstream, seed+1, down); sent <- err }()
	got := make(chan error, 1)
	if how == "idle" || how == "client close" {
		// idle: nothing reads the client, so no byte moves once the
		// buffers are full. client close: bytes must be unread at the
		// close for it to reset; a reader that had taken them all would
		// make it a FIN, which a relay cannot tell from a half-close, and
		// with the upstream not reading either the session rightly waits.
		got <- nil
	} else {
		go func() { _, err := checkRandom(g.client, seed+1); got <- err }()
	}
	// A random amount arrives at the upstream, checked.
	k := int64(1 + rnd.IntN(1<<20))
	b, w := make([]byte, k), make([]byte, k)
	if _, err := io.ReadFull(g.upstream, b); err != nil {
		t.Fatalf("read %d bytes: %v", k, err)
	}
	newStream(seed).next(w)
	if i := mismatch(b, w); i >= 0 {
		t.Fatalf("byte %d of the first %d at the upstream differs from the stream sent", i, k)
	}
	switch how {
	case "cancel":
		cancel()
	case "client reset", "upstream reset":
		c := g.client
		if how == "upstream reset" {
			c = g.upstream
		}
		c.SetLinger(0)
		c.Close()
	case "client close":
		waitQueued(t, g.client, 1)
		g.client.Close() // bytes unread: the kernel resets
	}
	res := g.wait(t)
	switch {
	case res.err == nil:
		t.Errorf("%s: Pipe ended with no error mid-transfer: %+v", how, res.st)
	case how == "idle" && !errors.Is(res.err, ErrIdleTimeout):
		t.Errorf("%s: Pipe: %v; want ErrIdleTimeout", how, res.err)
	case how == "cancel" && !errors.Is(res.err, context.Canceled):
		t.Errorf("%s: Pipe: %v; want context.Canceled", how, res.err)
	}
	if res.st.ClientToUpstream < k {
		t.Errorf("%s: Stats %+v; want at least the %d bytes the upstream read", how, res.st, k)
	}
	// As Pipe's caller: close; the test's readers and writers then end.
	for _, c := range []*net.TCPConn{g.relayA, g.relayB, g.client, g.upstream} {
		c.Close()
	}
	for range 2 {
		<-sent
	}
	if err := <-got; err != nil && strings.Contains(err.Error(), "differs") {
		t.Errorf("%s: client: %v", how, err)
	}
	if n := r.bufsOut.Load(); n != 0 {
		t.Errorf("%s: %d copy buffers held after Pipe returned", how, n)
	}
	checkPool(t, r.pipes)
}

// TestResetMeetsEOFGoroutines is TestLoopResetMeetsEOF on the paths
// that are not an event loop: one side's FIN and the other side's reset
// are both in the relay's sockets when the session starts. Whichever half
// meets the reset first, the session ends with it labelled with the
// direction that reads the reset socket, as on a loop. The half that
// passes the FIN on used to take the reset at its half-close (shutdown:
// ENOTCONN, then SO_ERROR) and label it with its own direction, which
// reads the other socket. Several rounds: the halves race for the error.
func TestResetMeetsEOFGoroutines(t *testing.T) {
	t.Parallel()
	for _, mode := range nonLoopModes {
		for _, side := range []string{"upstream", "client"} {
			t.Run(mode.name+"/"+side+" resets", func(t *testing.T) {
				t.Parallel()
				r := New(mode.opts)
				defer r.Close()
				if mode.refuse {
					r.refuseSplice = unix.EINVAL
				}
				for range 10 {
					g := newRig(t)
					label := finAndReset(t, g, side)
					res := g.start(context.Background(), r).wait(t)
					if !errors.Is(res.err, syscall.ECONNRESET) || !strings.Contains(res.err.Error(), label) || strings.Count(res.err.Error(), "relay: ") != 1 {
						t.Fatalf("session: %v; want ECONNRESET labelled %q, alone", res.err, label)
					}
				}
			})
		}
	}
}

// TestPoolSharedIntegrity runs sessions at once on the goroutine
// path through one small pool of one-page pipes, and resets every other
// one mid-transfer, as often while a pipe holds its bytes as not. A pipe
// pooled with bytes in it would hand them to another session, whose
// stream then differs from what its sender sent; every session left
// whole must deliver its streams exactly.
func TestPoolSharedIntegrity(t *testing.T) {
	t.Parallel()
	r := New(Options{Loops: -1, PipeBytes: 4096, MaxIdlePipes: 2})
	defer r.Close()
	const sessions = 12
	errs := make(chan error, sessions)
	for i := range sessions {
		g := newTightRig(t).start(context.Background(), r)
		go func() { errs <- sharedSession(g, uint64(5000+10*i), i%2 == 1) }()
	}
	for range sessions {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	checkPool(t, r.pipes)
}

// sharedSession is one session of TestPoolSharedIntegrity: 1 MiB of
// seed's streams each way, checked at both ends; with reset, the client
// resets once a random part of its stream reached the upstream.
func sharedSession(g *rig, seed uint64, reset bool) error {
	const n = 1 << 20
	type result struct {
		n   int64
		err error
	}
	sendUp, sendDown, atUp, atClient := make(chan result, 1), make(chan result, 1), make(chan result, 1), make(chan result, 1)
	go func() { k, err := sendRandom(g.client, seed, n); sendUp <- result{k, err} }()
	// With reset, the downstream often passes its FIN on first, and the
	// reset then comes while the other direction waits on an upstream
	// that reads nothing, as in endMidTransfer (the reset watch sees it).
	go func() { k, err := sendRandom(g.upstream, seed+1, n); sendDown <- result{k, err} }()
	go func() { k, err := checkRandom(g.client, seed+1); atClient <- result{k, err} }()
	if reset {
		k := 1 + rand.New(rand.NewPCG(seed, 3)).IntN(n/2)
		b, w := make([]byte, k), make([]byte, k)
		if _, err := io.ReadFull(g.upstream, b); err != nil {
			return fmt.Errorf("session %d: upstream read: %v", seed, err)
		}
		newStream(seed).next(w)
		if i := mismatch(b, w); i >= 0 {
			return fmt.Errorf("session %d: byte %d at the upstream differs from the stream sent", seed, i)
		}
		g.client.SetLinger(0)
		g.client.Close()
		res, err := waitDone(g)
		if err != nil {
			return fmt.Errorf("session %d: %w", seed, err)
		}
		for _, c := range []*net.TCPConn{g.relayA, g.relayB, g.upstream} {
			c.Close()
		}
		<-sendUp
		<-sendDown
		if c := <-atClient; c.err != nil && strings.Contains(c.err.Error(), "differs") {
			return fmt.Errorf("session %d: client: %v", seed, c.err)
		}
		if res.err == nil {
			return fmt.Errorf("session %d: no error after a reset", seed)
		}
		return nil
	}
	go func() { k, err := checkRandom(g.upstream, seed); atUp <- result{k, err} }()
	su, sd, au, ac := <-sendUp, <-sendDown, <-atUp, <-atClient
	if err := errors.Join(su.err, sd.err, au.err, ac.err); err != nil {
		return fmt.Errorf("session %d: %w", seed, err)
	}
	res, err := waitDone(g)
	if err != nil {
		return fmt.Errorf("session %d: %w", seed, err)
	}
	if au.n != n || ac.n != n || res.err != nil || res.st.ClientToUpstream != n || res.st.UpstreamToClient != n {
		return fmt.Errorf("session %d: got %d and %d bytes, Pipe %v, %+v; want %d each way, nil", seed, au.n, ac.n, res.err, res.st, n)
	}
	return nil
}

// waitDone is rig.wait for a goroutine other than the test's.
func waitDone(g *rig) (pipeResult, error) {
	select {
	case res := <-g.done:
		return res, nil
	case <-time.After(safety):
		return pipeResult{}, errors.New("Pipe did not return")
	}
}
