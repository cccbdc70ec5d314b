package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const shortRun = 300 * time.Millisecond

// startTarget serves kind on 127.0.0.1:0 until the test ends and returns
// its address.
func startTarget(t *testing.T, kind Target, seed uint64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &Server{Kind: kind, Seed: seed}
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve(%v): %v", kind, err)
		}
	})
	return ln.Addr().String()
}

// checkTput fails the test unless r moved bytes in every stream without errors.
func checkTput(t *testing.T, r *TputResult, err error, streams int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Total() != 0 {
		t.Fatalf("errors: %+v", r.Errors)
	}
	if len(r.PerStream) != streams || r.Bytes == 0 || r.Gbps <= 0 {
		t.Fatalf("streams %d bytes %d Gbps %v; want %d streams moving bytes", len(r.PerStream), r.Bytes, r.Gbps, streams)
	}
	for i, s := range r.PerStream {
		if s.Bytes == 0 {
			t.Errorf("stream %d moved nothing", i)
		}
	}
	perGiB, gib := func(c *CPU) float64 { return c.PerGiB }, float64(r.Bytes)/(1<<30)
	checkRunCPU(t, "client", r.ClientCPU, selfCPU, perGiB, gib)
	checkRunCPU(t, "machine", r.MachineCPU, machineCPU, perGiB, gib)
}

// checkRunCPU fails the test unless a CPU figure of the run (what: the
// load generator's own, read by selfCPU, or the machine's, by machineCPU)
// is there wherever read can read it, positive, with its per-unit figure
// (per) the one computed from it over the run's units, and no more than
// every CPU busy for the whole run (the clock ticks of two /proc/stat
// readings allowed for): a load that kept a core busy throughout cannot
// have left the machine idle. Parallel tests share the process and the
// machine, so the amount itself is not checked.
func checkRunCPU(t *testing.T, what string, c *CPU, read func() (time.Duration, bool), per func(*CPU) float64, units float64) {
	t.Helper()
	if _, ok := read(); !ok {
		if c != nil {
			t.Errorf("%s CPU %+v where it cannot be read", what, c)
		}
		return
	}
	if c == nil || c.Seconds <= 0 || c.Cores <= 0 || c.PID != 0 || per(c) != c.Seconds/units {
		t.Fatalf("%s CPU %+v; want a positive figure and its per-unit share", what, c)
	}
	if limit := float64(runtime.NumCPU())*1.1 + 0.5; c.Cores > limit {
		t.Errorf("%s CPU %.2f cores busy on %d CPUs", what, c.Cores, runtime.NumCPU())
	}
}

func TestTputDirect(t *testing.T) {
	t.Parallel()
	sink, source := startTarget(t, Sink, 0), startTarget(t, Source, 7)
	for _, tc := range []struct {
		name    string
		dir     Direction
		verify  Verify
		streams int
		counted string // UpCounted
	}{
		{"up", Up, VerifyFull, 2, "delivered"},
		{"down", Down, VerifyFull, 2, ""},
		{"down sample", Down, VerifySample, 1, ""},
		{"up without count", Up, VerifyNone, 1, "written"},
		{"both", Both, VerifyFull, 1, "delivered"},
		{"both without count", Both, VerifyNone, 1, "written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := TputOptions{Client: Client{Duration: shortRun}, Dir: tc.dir, Sink: sink, Source: source,
				Streams: tc.streams, Seed: 7, Verify: tc.verify}
			r, err := Tput(context.Background(), o)
			want := tc.streams
			if tc.dir == Both {
				want *= 2
			}
			checkTput(t, r, err, want)
			if r.UpCounted != tc.counted || r.Gbps != r.UpGbps+r.DownGbps {
				t.Errorf("up counted %q, %v Gbit/s (up %v, down %v); want %q, up plus down", r.UpCounted, r.Gbps, r.UpGbps, r.DownGbps, tc.counted)
			}
		})
	}
}

func TestTputWrongSeed(t *testing.T) {
	t.Parallel()
	source := startTarget(t, Source, 1)
	r, err := Tput(context.Background(), TputOptions{Client: Client{Duration: shortRun}, Dir: Down, Source: source, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Data != 1 {
		t.Fatalf("errors %+v; want one data mismatch", r.Errors)
	}
}

// TestTputSilentSource: a stream whose target sends nothing is an error
// once CountTimeout has passed without its first byte, not a stream that
// moved 0 bytes.
func TestTputSilentSource(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c // open and silent until the test ends
		}
		close(held)
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range held {
			c.Close()
		}
	})
	r, err := Tput(context.Background(), TputOptions{Client: Client{Duration: shortRun}, Dir: Down,
		Source: ln.Addr().String(), CountTimeout: 2 * shortRun})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Total() != 1 || len(r.PerStream) != 1 || !strings.Contains(r.PerStream[0].Error, "not one byte read") {
		t.Fatalf("errors %+v, streams %+v; want one stream with \"not one byte read\"", r.Errors, r.PerStream)
	}
}

// corruptSource serves the pattern of seed with the byte at offset flipped.
func corruptSource(t *testing.T, seed uint64, offset int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	buf := newPattern(seed).fill(make([]byte, 4*patternBytes))
	bad := append([]byte(nil), buf...)
	bad[offset] ^= 0x01
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for b := bad; ; b = buf {
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestTputCorruptSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		verify Verify
		offset int
	}{
		{"full", VerifyFull, 3*patternBytes + 12345},
		{"sample first byte", VerifySample, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			source := corruptSource(t, 9, tc.offset)
			o := TputOptions{Client: Client{Duration: shortRun}, Dir: Down, Source: source, Seed: 9, Verify: tc.verify}
			r, err := Tput(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors.Data != 1 || !strings.Contains(r.PerStream[0].Error, "source pattern") {
				t.Fatalf("errors %+v; want one data mismatch", r.Errors)
			}
		})
	}
}

func TestTputCancel(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	started := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// 64 MiB is more than the kernel buffers hold, so once it is
		// written the client is reading: the transfer has started.
		buf := newPattern(0).fill(make([]byte, patternBytes))
		for range 1024 {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		close(started)
		serveSource(c, buf)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var r *TputResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		r, err = Tput(ctx, TputOptions{Client: Client{Duration: time.Minute}, Dir: Down, Source: ln.Addr().String()})
	}()
	select {
	case <-started:
	case <-done:
		t.Fatalf("Tput ended before the transfer started: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Tput did not stop when its context ended")
	}
	if err != nil || r.Errors.Total() != 0 || r.Seconds > 20 {
		t.Fatalf("err %v, errors %+v, %v s", err, r.Errors, r.Seconds)
	}
}

func TestRRDirect(t *testing.T) {
	t.Parallel()
	echo := startTarget(t, Echo, 0)
	for _, size := range []int{1, 3000} {
		r, err := RR(context.Background(), RROptions{Client: Client{Duration: shortRun}, Target: echo, Workers: 4, SizeBytes: size})
		if err != nil {
			t.Fatal(err)
		}
		if r.Errors.Total() != 0 || r.Conns == 0 || r.ConnsPerSec <= 0 {
			t.Fatalf("size %d: conns %d, errors %+v", size, r.Conns, r.Errors)
		}
		if l := r.Latency; !(l.Min <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max > 0) {
			t.Errorf("latency out of order: %+v", l)
		}
		per1k, thousands := func(c *CPU) float64 { return c.Per1kConns }, float64(r.Conns)/1000
		checkRunCPU(t, "client", r.ClientCPU, selfCPU, per1k, thousands)
		checkRunCPU(t, "machine", r.MachineCPU, machineCPU, per1k, thousands)
	}
}

func TestRRConnectRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r, err := RR(context.Background(), RROptions{Client: Client{Duration: 50 * time.Millisecond}, Target: addr, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Connect == 0 || r.Conns != 0 {
		t.Fatalf("conns %d, errors %+v; want only connect errors", r.Conns, r.Errors)
	}
}

func TestIdleDirect(t *testing.T) {
	t.Parallel()
	echo := startTarget(t, Echo, 0)
	r, err := Idle(context.Background(), IdleOptions{Client: Client{}, Target: echo, Sessions: 50, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Open != 50 || r.Alive != 50 || r.Errors.Total() != 0 {
		t.Fatalf("open %d, alive %d, errors %+v", r.Open, r.Alive, r.Errors)
	}
}

// serveEach listens on a loopback port until the test ends and runs handle
// on each connection in a goroutine of its own, closing it after; it
// returns the address.
func serveEach(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestIdleDropped: sessions that end during the hold (a target that closes
// after the first echo) are not alive at its end, and each is an error.
func TestIdleDropped(t *testing.T) {
	t.Parallel()
	target := serveEach(t, func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b) // one echo, then the session ends
		}
	})
	r, err := Idle(context.Background(), IdleOptions{Target: target, Sessions: 20, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Open != 20 || r.Alive != 0 || r.Errors.Total() != 20 {
		t.Fatalf("open %d, alive %d, errors %+v; want 20 open, none alive, 20 errors", r.Open, r.Alive, r.Errors)
	}
}

// TestRRSpread: with several targets and sources, worker i connects from
// source i mod n to target i mod n.
func TestRRSpread(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]map[netip.Addr]int{} // listener -> client IPs
	serve := func(addr string) string {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		name, clients := ln.Addr().String(), map[netip.Addr]int{}
		mu.Lock()
		seen[name] = clients
		mu.Unlock()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				clients[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()]++
				mu.Unlock()
				go func() {
					defer c.Close()
					io.Copy(c, c)
				}()
			}
		}()
		return name
	}
	a, b := serve("127.0.0.1:0"), serve("127.0.0.2:0")
	src := []netip.Addr{netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}
	r, err := RR(context.Background(), RROptions{Client: Client{Duration: shortRun}, Target: a + "," + b,
		Sources: src, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Total() != 0 || r.Conns == 0 {
		t.Fatalf("conns %d, errors %+v", r.Conns, r.Errors)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, target := range []string{a, b} {
		if got := seen[target]; len(got) != 1 || got[src[i]] == 0 {
			t.Errorf("target %s saw clients %v; want only %v", target, got, src[i])
		}
	}
}

// TestRRExchanges runs several echoes per connection against a counting echo
// server: every message must reach it (Conns x Exchanges x size bytes), and
// an echo that goes wrong after the first exchange must be caught.
func TestRRExchanges(t *testing.T) {
	t.Parallel()
	for _, corrupt := range []bool{false, true} {
		t.Run(fmt.Sprintf("corrupt=%v", corrupt), func(t *testing.T) {
			t.Parallel()
			var echoed atomic.Int64
			target := serveEach(t, func(c net.Conn) {
				b := make([]byte, 64)
				for i := 0; ; i++ {
					n, err := c.Read(b)
					if err != nil {
						return
					}
					echoed.Add(int64(n))
					if corrupt && i > 0 {
						b[0]++ // every read after a connection's first
					}
					c.Write(b[:n])
				}
			})
			const size, exchanges = 10, 25
			r, err := RR(context.Background(), RROptions{Client: Client{Duration: shortRun}, Target: target,
				Workers: 2, SizeBytes: size, Exchanges: exchanges})
			if err != nil {
				t.Fatal(err)
			}
			if corrupt {
				if r.Errors.Data == 0 || r.Conns != 0 {
					t.Fatalf("corrupted echoes: %d connections counted, errors %+v; want none counted, data errors", r.Conns, r.Errors)
				}
				return
			}
			if r.Errors.Total() != 0 || r.Conns == 0 || r.Exchanges != exchanges {
				t.Fatalf("conns %d, exchanges %d, errors %+v", r.Conns, r.Exchanges, r.Errors)
			}
			if got, want := echoed.Load(), int64(r.Conns)*exchanges*size; got != want {
				t.Errorf("the server echoed %d bytes; want %d (%d connections x %d exchanges x %d bytes)", got, want, r.Conns, exchanges, size)
			}
			if r.ExchangesPerSec != r.ConnsPerSec*exchanges {
				t.Errorf("exchanges/s %v, conn/s %v", r.ExchangesPerSec, r.ConnsPerSec)
			}
		})
	}
}
