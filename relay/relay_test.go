package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// safety bounds every wait of these tests; none is used to synchronise.
const safety = 20 * time.Second

// tcpPair returns both ends of a loopback TCP connection; t.Cleanup closes them.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	return tcpPairWith(t, &net.ListenConfig{}, &net.Dialer{})
}

func tcpPairWith(t testing.TB, lc *net.ListenConfig, d *net.Dialer) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	acc := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		acc <- result{c, err}
	}()
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	t.Cleanup(func() { a.c.Close() })
	return c.(*net.TCPConn), a.c.(*net.TCPConn)
}

// rig is a relay between two loopback connections:
// client <-> relayA ==Pipe== relayB <-> upstream.
type rig struct {
	client, relayA, relayB, upstream *net.TCPConn
	done                             chan pipeResult
}

type pipeResult struct {
	st  Stats
	err error
}

func newRig(t testing.TB) *rig {
	t.Helper()
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPair(t)
	g.relayB, g.upstream = tcpPair(t)
	g.armSafety()
	return g
}

// armSafety bounds every read and write of the test's ends of the rig, so a
// relay that loses an EOF fails the test instead of hanging it.
func (g *rig) armSafety() {
	end := time.Now().Add(safety)
	g.client.SetDeadline(end)
	g.upstream.SetDeadline(end)
}

// start runs Pipe(ctx, relayA, relayB) in the background.
func (g *rig) start(ctx context.Context, r *Relay) *rig {
	go func() {
		st, err := r.Pipe(ctx, g.relayA, g.relayB)
		g.done <- pipeResult{st, err}
	}()
	return g
}

// wait returns Pipe's result, failing the test if it takes past the safety bound.
func (g *rig) wait(t testing.TB) pipeResult {
	t.Helper()
	select {
	case res := <-g.done:
		return res
	case <-time.After(safety):
		t.Fatal("Pipe did not return")
		return pipeResult{}
	}
}

// pattern is a pseudo-random stream: byte i is block[i%len(block)], with a
// block length prime to every chunk size so that lost or reordered chunks
// show in the checksum.
type pattern []byte

func newPattern(seed uint64) pattern {
	var s [32]byte
	s[0] = byte(seed)
	b := make([]byte, 1<<20+4093)
	rand.NewChaCha8(s).Read(b)
	return b
}

// send writes n bytes of the stream to c in writes of at most chunk bytes,
// then half-closes c, and returns the SHA-256 of what it wrote.
func (p pattern) send(c *net.TCPConn, n int64, chunk int) ([32]byte, error) {
	h := sha256.New()
	for sent := int64(0); sent < n; {
		off := int(sent % int64(len(p)))
		k := min(chunk, len(p)-off)
		if rest := n - sent; int64(k) > rest {
			k = int(rest)
		}
		w, err := c.Write(p[off : off+k])
		h.Write(p[off : off+w])
		sent += int64(w)
		if err != nil {
			return [32]byte{}, err
		}
	}
	return [32]byte(h.Sum(nil)), c.CloseWrite()
}

// drain reads c to EOF and returns the byte count and SHA-256.
func drain(c *net.TCPConn) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, struct{ io.Reader }{c})
	return n, [32]byte(h.Sum(nil)), err
}

type sent struct {
	sum [32]byte
	err error
}

type received struct {
	n   int64
	sum [32]byte
	err error
}

func sendAsync(p pattern, c *net.TCPConn, n int64, chunk int) chan sent {
	ch := make(chan sent, 1)
	go func() {
		sum, err := p.send(c, n, chunk)
		ch <- sent{sum, err}
	}()
	return ch
}

func drainAsync(c *net.TCPConn) chan received {
	ch := make(chan received, 1)
	go func() {
		n, sum, err := drain(c)
		ch <- received{n, sum, err}
	}()
	return ch
}

// transferSize is the bytes moved each way by TestPipeTransfer.
func transferSize() int64 {
	if testing.Short() {
		return 8 << 20
	}
	return 64 << 20
}

// spliceWanted reports whether this platform has the splice path.
var spliceWanted = runtime.GOOS == "linux"

func TestPipeTransfer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  Options
		copy  bool // the plain path: nothing spliced
		mixed bool // small reads throughout: whether a read filled the buffer and spliced is up to timing
		chunk int  // the client's write size; 0: 100,000
	}{
		{name: "splice", opts: Options{}},
		{name: "copy below 16K", opts: Options{CopyBelow: 16 << 10}},
		{name: "copy below 16K, small writes", opts: Options{CopyBelow: 16 << 10}, mixed: true, chunk: 1000},
		{name: "copy below 1M", opts: Options{CopyBelow: 1 << 20}, mixed: true},
		{name: "copy", opts: Options{ForceCopy: true}, copy: true},
		{name: "pipe=4096", opts: Options{PipeBytes: 4096}},
		{name: "pipe=kernel-default", opts: Options{PipeBytes: -1, MaxIdlePipes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := transferSize()
			if tt.name == "pipe=4096" || tt.name == "pipe=kernel-default" {
				n /= 4
			}
			r := New(tt.opts)
			defer r.Close()
			g := newRig(t).start(context.Background(), r)
			p, q := newPattern(1), newPattern(2)

			chunk := tt.chunk
			if chunk == 0 {
				chunk = 100_000
			}
			up := sendAsync(p, g.client, n, chunk)
			down := sendAsync(q, g.upstream, n, 64<<10)
			atUpstream := drainAsync(g.upstream)
			nc, sumc, err := drain(g.client)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			u, d, atUp := <-up, <-down, <-atUpstream
			if u.err != nil || d.err != nil || atUp.err != nil {
				t.Fatalf("send up: %v, send down: %v, upstream read: %v", u.err, d.err, atUp.err)
			}
			if atUp.n != n || atUp.sum != u.sum {
				t.Errorf("client->upstream: got %d bytes, checksum match %v; want %d, true", atUp.n, atUp.sum == u.sum, n)
			}
			if nc != n || sumc != d.sum {
				t.Errorf("upstream->client: got %d bytes, checksum match %v; want %d, true", nc, sumc == d.sum, n)
			}
			res := g.wait(t)
			if res.err != nil {
				t.Fatalf("Pipe: %v", res.err)
			}
			st := res.st
			if st.ClientToUpstream != n || st.UpstreamToClient != n {
				t.Errorf("Stats bytes = %d, %d; want %d each", st.ClientToUpstream, st.UpstreamToClient, n)
			}
			if up, down := r.Relayed(); up != n || down != n {
				t.Errorf("Relayed() = %d, %d; want %d each", up, down, n)
			}
			wantSpliced := spliceWanted && !tt.copy
			if !tt.mixed && (st.Spliced != wantSpliced || (st.SpliceCalls > 0) != wantSpliced) || st.Fallback {
				t.Errorf("Stats = %+v; want Spliced %v, SpliceCalls > 0 %v, no Fallback", st, wantSpliced, wantSpliced)
			}
			// With CopyBelow, every direction of a loop starts with a
			// small read.
			wantCopies := spliceWanted && !tt.copy && tt.opts.CopyBelow > 0
			if (st.CopyCalls > 0) != wantCopies {
				t.Errorf("Stats = %+v; want CopyCalls > 0 %v", st, wantCopies)
			}
		})
	}
}

// TestRelayedLive checks that Relayed counts a session's bytes while it
// runs, not when it ends, on every path: each step sends bytes one way,
// reads them at the far end, and then expects the count to reach exactly
// what was sent so far (it may trail the read by the splice call that
// moved them, so it is polled, bounded) with the session still running.
func TestRelayedLive(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"loops", Options{}},
		{"goroutines", Options{Loops: -1}},
		{"copy", Options{ForceCopy: true}},
		{"copy below 16K", Options{CopyBelow: 16 << 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := New(tt.opts)
			defer r.Close()
			g := newRig(t).start(context.Background(), r)
			var want [2]int64
			for i, step := range []struct {
				d    int   // 0: client to upstream
				size int64 // 100: a small read; 300,000: spliced in several calls
			}{{0, 100}, {1, 300}, {0, 300_000}, {1, 300_000}, {1, 7}} {
				src, dst := g.client, g.upstream
				if step.d == 1 {
					src, dst = dst, src
				}
				sent := make(chan error, 1)
				go func() {
					_, err := src.Write(make([]byte, step.size))
					sent <- err
				}()
				if _, err := io.CopyN(io.Discard, dst, step.size); err != nil {
					t.Fatalf("step %d: read: %v", i, err)
				}
				if err := <-sent; err != nil {
					t.Fatalf("step %d: send: %v", i, err)
				}
				want[step.d] += step.size
				var up, down int64
				for end := time.Now().Add(safety); time.Now().Before(end); runtime.Gosched() {
					if up, down = r.Relayed(); up == want[0] && down == want[1] {
						break
					}
				}
				if up != want[0] || down != want[1] {
					t.Fatalf("step %d: Relayed() = %d, %d; want %d, %d", i, up, down, want[0], want[1])
				}
				select {
				case res := <-g.done:
					t.Fatalf("step %d: Pipe returned early: %+v", i, res)
				default:
				}
			}
			g.client.CloseWrite()
			g.upstream.CloseWrite()
			res := g.wait(t)
			if res.err != nil {
				t.Fatalf("Pipe: %v", res.err)
			}
			if res.st.ClientToUpstream != want[0] || res.st.UpstreamToClient != want[1] {
				t.Errorf("Stats bytes = %d, %d; want %d, %d", res.st.ClientToUpstream, res.st.UpstreamToClient, want[0], want[1])
			}
			if up, down := r.Relayed(); up != want[0] || down != want[1] {
				t.Errorf("after the end: Relayed() = %d, %d; want %d, %d", up, down, want[0], want[1])
			}
		})
	}
}

func TestPipeHalfClose(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"splice", Options{}}, {"copy", Options{ForceCopy: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			g := newRig(t).start(context.Background(), r)
			req, resp := newPattern(3), newPattern(4)
			const reqBytes, half = 3 << 20, 512 << 10

			// -> the client sends its request, then half-closes.
			up := sendAsync(req, g.client, reqBytes, 32<<10)
			// <- the upstream answers in two halves around the request's EOF.
			type upstreamResult struct {
				n       int64
				sum     [32]byte
				respSum [32]byte
				err     error
			}
			upDone := make(chan upstreamResult, 1)
			go func() {
				var res upstreamResult
				defer func() { upDone <- res }()
				h := sha256.New()
				if _, res.err = g.upstream.Write(resp[:half]); res.err != nil {
					return
				}
				h.Write(resp[:half])
				if res.n, res.sum, res.err = drain(g.upstream); res.err != nil {
					return
				}
				// The request is complete: the answer keeps flowing after EOF.
				if _, res.err = g.upstream.Write(resp[half : 2*half]); res.err != nil {
					return
				}
				h.Write(resp[half : 2*half])
				res.respSum = [32]byte(h.Sum(nil))
				res.err = g.upstream.Close()
			}()

			nc, sumc, err := drain(g.client)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			u, us := <-up, <-upDone
			if u.err != nil || us.err != nil {
				t.Fatalf("client send: %v; upstream: %v", u.err, us.err)
			}
			if us.n != reqBytes || us.sum != u.sum {
				t.Errorf("upstream got %d bytes then EOF, checksum match %v; want %d, true", us.n, us.sum == u.sum, reqBytes)
			}
			if nc != 2*half || sumc != us.respSum {
				t.Errorf("client got %d bytes, checksum match %v; want %d, true", nc, sumc == us.respSum, 2*half)
			}
			res := g.wait(t)
			if res.err != nil {
				t.Errorf("Pipe: %v; want nil", res.err)
			}
			if res.st.ClientToUpstream != reqBytes || res.st.UpstreamToClient != 2*half {
				t.Errorf("Stats = %+v; want %d and %d bytes", res.st, reqBytes, 2*half)
			}
		})
	}
}

func TestPipeCancel(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"splice", Options{}}, {"copy", Options{ForceCopy: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g := newRig(t).start(ctx, r)
			// Prove the session runs before cancelling it: one byte each way.
			roundTrip(t, g)
			cancel()
			res := g.wait(t)
			if !errors.Is(res.err, context.Canceled) {
				t.Fatalf("Pipe: %v; want context.Canceled", res.err)
			}
			if res.st.ClientToUpstream != 1 || res.st.UpstreamToClient != 1 {
				t.Errorf("Stats = %+v; want 1 byte each way", res.st)
			}
		})
	}
}

// roundTrip moves one byte each way through g and fails the test if it is lost.
func roundTrip(t testing.TB, g *rig) {
	t.Helper()
	b := []byte{0}
	for _, c := range [][2]*net.TCPConn{{g.client, g.upstream}, {g.upstream, g.client}} {
		if _, err := c[0].Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c[1], b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPipeIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond

	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		r := New(Options{IdleTimeout: idle})
		defer r.Close()
		begin := time.Now()
		res := newRig(t).start(context.Background(), r).wait(t)
		if !errors.Is(res.err, ErrIdleTimeout) || !errors.Is(res.err, os.ErrDeadlineExceeded) {
			t.Fatalf("Pipe: %v; want ErrIdleTimeout and os.ErrDeadlineExceeded", res.err)
		}
		if took := time.Since(begin); took < idle {
			t.Errorf("idle timeout fired after %v; want at least %v", took, idle)
		}
	})
}

func TestPipeReset(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"splice", Options{}}, {"copy", Options{ForceCopy: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			g := newRig(t).start(context.Background(), r)
			up := sendAsync(newPattern(5), g.client, 64<<20, 64<<10)
			// Let the transfer get going, then reset it from upstream.
			if _, err := io.ReadFull(g.upstream, make([]byte, 256<<10)); err != nil {
				t.Fatal(err)
			}
			g.upstream.SetLinger(0)
			g.upstream.Close()
			res := g.wait(t)
			if res.err == nil {
				t.Fatal("Pipe: nil error after a reset")
			}
			msg := res.err.Error()
			if !strings.Contains(msg, "relay: client->upstream: ") && !strings.Contains(msg, "relay: upstream->client: ") {
				t.Errorf("Pipe: %q; want the direction labelled", msg)
			}
			if !errors.Is(res.err, syscall.ECONNRESET) && !errors.Is(res.err, syscall.EPIPE) {
				t.Errorf("Pipe: %v; want ECONNRESET or EPIPE", res.err)
			}
			if errors.Is(res.err, os.ErrDeadlineExceeded) {
				t.Errorf("Pipe: %v; the unblocking timeout should be left out", res.err)
			}
			g.client.Close() // unblocks the sender, whose error is expected
			<-up
		})
	}
}

// TestPipeResetAfterHalfClose: a side that half-closed and then resets is
// noticed though nothing reads it any more and the far side stays silent
// (the session lasted until the far side wrote, or for ever): Pipe returns
// the reset, labelled with that side's direction. Both sides, each way.
func TestPipeResetAfterHalfClose(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"loops", Options{}}, {"goroutines", Options{Loops: -1}}, {"copy", Options{ForceCopy: true}}} {
		for _, resetter := range []string{"client", "upstream"} {
			t.Run(mode.name+"/"+resetter, func(t *testing.T) {
				t.Parallel()
				r := New(mode.opts)
				defer r.Close()
				g := newRig(t).start(context.Background(), r)
				from, to, label := g.client, g.upstream, "relay: client->upstream: "
				if resetter == "upstream" {
					from, to, label = g.upstream, g.client, "relay: upstream->client: "
				}
				if _, err := from.Write([]byte("req")); err != nil {
					t.Fatal(err)
				}
				from.CloseWrite()
				if got, err := io.ReadAll(to); err != nil || string(got) != "req" {
					t.Fatalf("read %q, %v; want \"req\" then EOF", got, err)
				}
				from.SetLinger(0)
				from.Close() // a reset; the other side stays silent and open
				res := g.wait(t)
				// Linux reports a reset that finds the socket in
				// CLOSE_WAIT (its FIN received) as EPIPE.
				if !errors.Is(res.err, syscall.ECONNRESET) && !errors.Is(res.err, syscall.EPIPE) || !strings.Contains(res.err.Error(), label) {
					t.Fatalf("Pipe: %v; want ECONNRESET or EPIPE labelled %q", res.err, label)
				}
			})
		}
	}
}

// TestPipeGoroutines is not parallel: it counts the whole process's goroutines.
func TestPipeGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, opts := range []Options{{}, {ForceCopy: true}, {IdleTimeout: time.Minute}} {
		r := New(opts)
		for range 20 {
			func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				g := newRig(t).start(ctx, r)
				roundTrip(t, g)
				g.client.CloseWrite()
				g.upstream.CloseWrite()
				if res := g.wait(t); res.err != nil {
					t.Fatalf("Pipe: %v", res.err)
				}
				g.client.Close()
				g.upstream.Close()
			}()
		}
		r.Close()
	}
	// Closed sockets and stopped timers may take a moment to let go of
	// their goroutines: poll, bounded.
	var now int
	for end := time.Now().Add(safety); time.Now().Before(end); {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("goroutines: %d before, %d after\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// TestCopyIdleHoldsNoBuffer checks that the plain path, like splice's pipes,
// holds a buffer only while data is in hand: an established idle session
// holds none, and one is taken again when data comes.
func TestCopyIdleHoldsNoBuffer(t *testing.T) {
	t.Parallel()
	r := New(Options{ForceCopy: true})
	defer r.Close()
	g := newRig(t).start(context.Background(), r)
	roundTrip(t, g)
	// The halves give their buffers back just after the bytes went out: wait
	// for that (bounded), then check none is held.
	deadline := time.Now().Add(5 * time.Second)
	for r.bufsOut.Load() != 0 && time.Now().Before(deadline) {
		<-time.After(time.Millisecond)
	}
	if n := r.bufsOut.Load(); n != 0 {
		t.Fatalf("established idle session holds %d copy buffers; want 0", n)
	}
	roundTrip(t, g) // and it still works
	g.client.CloseWrite()
	g.upstream.CloseWrite()
	if res := g.wait(t); res.err != nil || res.st.Spliced {
		t.Fatalf("Pipe: %v, %+v; want nil, not spliced", res.err, res.st)
	}
	if n := r.bufsOut.Load(); n != 0 {
		t.Errorf("after Pipe: %d copy buffers held; want 0", n)
	}
}
