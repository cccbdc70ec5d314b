//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pipeFds counts this process's open pipe descriptors.
func pipeFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open descriptors: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// waitPipeFds polls, bounded, until the process holds want pipe descriptors,
// and returns the last count.
func waitPipeFds(t testing.TB, want int) int {
	t.Helper()
	var n int
	for end := time.Now().Add(safety); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if n = pipeFds(t); n == want {
			break
		}
	}
	return n
}

// TestPipeFds is not parallel: it counts the whole process's descriptors.
func TestPipeFds(t *testing.T) {
	t.Run("pooled pipes released by Trim and Close", func(t *testing.T) {
		before := pipeFds(t)
		r := New(Options{})
		const sessions = 4
		var rigs []*rig
		for range sessions {
			rigs = append(rigs, newRig(t).start(context.Background(), r))
		}
		for _, g := range rigs {
			roundTrip(t, g)
			g.client.CloseWrite()
			g.upstream.CloseWrite()
		}
		for _, g := range rigs {
			if res := g.wait(t); res.err != nil || !res.st.Spliced {
				t.Fatalf("Pipe: %v, %+v; want nil, Spliced", res.err, res.st)
			}
		}
		idle := r.pipes.idle()
		if idle == 0 || idle > 2*sessions {
			t.Errorf("%d pipes pooled after %d sessions; want 1..%d", idle, sessions, 2*sessions)
		}
		if n := pipeFds(t); n != before+2*idle {
			t.Errorf("pipe fds = %d with %d pooled; want %d", n, idle, before+2*idle)
		}
		if n := r.Trim(); n != idle {
			t.Errorf("Trim closed %d pipes; want the %d pooled", n, idle)
		}
		if n := pipeFds(t); n != before || r.pipes.idle() != 0 {
			t.Errorf("after Trim: %d pipe fds, %d pooled; want %d, 0", n, r.pipes.idle(), before)
		}
		// A trimmed Relay pools again.
		g0 := newRig(t).start(context.Background(), r)
		roundTrip(t, g0)
		g0.client.CloseWrite()
		g0.upstream.CloseWrite()
		if res := g0.wait(t); res.err != nil || r.pipes.idle() == 0 {
			t.Fatalf("Pipe after Trim: %v, %d pooled; want nil and pooled pipes", res.err, r.pipes.idle())
		}
		r.Close()
		if n := pipeFds(t); n != before || r.pipes.idle() != 0 {
			t.Errorf("after Close: %d pipe fds, %d pooled; want %d, 0", n, r.pipes.idle(), before)
		}
		// A closed Relay still relays; its pipes are closed once given back.
		g := newRig(t).start(context.Background(), r)
		roundTrip(t, g)
		g.client.CloseWrite()
		g.upstream.CloseWrite()
		if res := g.wait(t); res.err != nil || !res.st.Spliced {
			t.Fatalf("Pipe after Close: %v, %+v; want nil, Spliced", res.err, res.st)
		}
		if n := pipeFds(t); n != before || r.pipes.idle() != 0 {
			t.Errorf("session after Close: %d pipe fds, %d pooled; want %d, 0", n, r.pipes.idle(), before)
		}
	})

	t.Run("idle session holds no pipe", func(t *testing.T) {
		before := pipeFds(t)
		r := New(Options{MaxIdlePipes: -1}) // no pool: any pipe left is a session's
		defer r.Close()
		g := newRig(t).start(context.Background(), r)
		roundTrip(t, g)
		if n := waitPipeFds(t, before); n != before {
			t.Errorf("established idle session: %d pipe fds; want %d (none of its own)", n, before)
		}
		roundTrip(t, g) // and it still works
		g.client.CloseWrite()
		g.upstream.CloseWrite()
		if res := g.wait(t); res.err != nil || res.st.SpliceCalls < 4 {
			t.Fatalf("Pipe: %v, %+v; want nil and 4 splice calls or more", res.err, res.st)
		}
		if n := pipeFds(t); n != before {
			t.Errorf("after Pipe: %d pipe fds; want %d", n, before)
		}
	})
}

func TestNewPipe(t *testing.T) {
	t.Parallel()
	def, err := newPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer def.close()
	tests := []struct {
		name string
		want int
		size int
	}{
		{"one page", 4096, 4096},
		{"rounded up", 5000, 8192},
		{"kernel default", 0, def.size},
	}
	if strconv.IntSize == 64 {
		// Over 2 GiB: every kernel refuses it (EINVAL, or EPERM when
		// unprivileged); the pipe keeps the size it had. A variable, so
		// that 32-bit builds compile what they never run.
		var over2G int64 = 1<<31 + 4096
		tests = append(tests, struct {
			name string
			want int
			size int
		}{"refused", int(over2G), def.size})
		// 4 GiB and a page: fcntl's 32-bit argument would make it a
		// page, which the kernel sets; refused as over 2 GiB instead.
		var over4G int64 = 1<<32 + 4096
		tests = append(tests, struct {
			name string
			want int
			size int
		}{"over 4 GiB", int(over4G), def.size})
	}
	for _, tt := range tests {
		p, err := newPipe(tt.want)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if p.size != tt.size {
			t.Errorf("%s: newPipe(%d).size = %d; want %d", tt.name, tt.want, p.size, tt.size)
		}
		p.close()
	}
}

// TestPipeMPTCP relays over MPTCP sockets, which older kernels refuse to
// splice: the relay must move every byte either way and say which it did.
func TestPipeMPTCP(t *testing.T) {
	t.Parallel()
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("kernel without MPTCP enabled (net.mptcp.enabled)")
	}
	lc, d := &net.ListenConfig{}, &net.Dialer{}
	lc.SetMultipathTCP(true)
	d.SetMultipathTCP(true)
	g := &rig{done: make(chan pipeResult, 1)}
	g.client, g.relayA = tcpPairWith(t, lc, d)
	g.relayB, g.upstream = tcpPairWith(t, lc, d)
	g.armSafety()
	for _, c := range []*net.TCPConn{g.relayA, g.relayB} {
		if ok, err := c.MultipathTCP(); !ok {
			t.Skipf("MPTCP socket refused, got plain TCP: %v", err)
		}
	}
	r := New(Options{})
	defer r.Close()
	g.start(context.Background(), r)
	const n = 8 << 20
	up := sendAsync(newPattern(6), g.client, n, 64<<10)
	down := sendAsync(newPattern(7), g.upstream, n, 64<<10)
	atUp := drainAsync(g.upstream)
	nc, sumc, err := drain(g.client)
	u, dn, a := <-up, <-down, <-atUp
	if err := errors.Join(err, u.err, dn.err, a.err); err != nil {
		t.Fatal(err)
	}
	if a.n != n || a.sum != u.sum || nc != n || sumc != dn.sum {
		t.Errorf("got %d and %d bytes, checksums match %v %v; want %d each, true", a.n, nc, a.sum == u.sum, sumc == dn.sum, n)
	}
	res := g.wait(t)
	if res.err != nil {
		t.Fatalf("Pipe: %v", res.err)
	}
	if !res.st.Spliced && !res.st.Fallback {
		t.Errorf("Stats = %+v; want Spliced or Fallback", res.st)
	}
	t.Logf("MPTCP: Spliced=%v Fallback=%v SpliceCalls=%d", res.st.Spliced, res.st.Fallback, res.st.SpliceCalls)
}

// TestPipeFallback checks the hand-over to the plain path when the kernel
// refuses splice before any byte moved.
func TestPipeFallback(t *testing.T) {
	t.Parallel()
	r := New(Options{})
	defer r.Close()
	r.setRefuse(syscall.EINVAL)
	g := newRig(t).start(context.Background(), r)
	const n = 4 << 20
	up := sendAsync(newPattern(8), g.client, n, 64<<10)
	down := sendAsync(newPattern(9), g.upstream, n, 64<<10)
	atUp := drainAsync(g.upstream)
	nc, sumc, err := drain(g.client)
	u, dn, a := <-up, <-down, <-atUp
	if err := errors.Join(err, u.err, dn.err, a.err); err != nil {
		t.Fatal(err)
	}
	if a.n != n || a.sum != u.sum || nc != n || sumc != dn.sum {
		t.Errorf("got %d and %d bytes, checksums match %v %v; want %d each, true", a.n, nc, a.sum == u.sum, sumc == dn.sum, n)
	}
	res := g.wait(t)
	if res.err != nil || !res.st.Fallback || res.st.Spliced || res.st.SpliceCalls != 0 {
		t.Errorf("Pipe: %v, %+v; want nil, Fallback and not Spliced", res.err, res.st)
	}
}
