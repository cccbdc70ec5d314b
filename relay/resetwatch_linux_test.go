//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPipeResetBehindStalledWrite: one side reads nothing, the other side
// sends until its bytes wait in the relay's socket, and then resets. The
// direction toward the silent side waits to write, for good, and the other
// one waits to read the silent side, or has finished, the silent side
// having half-closed (before the stall or after it). On the goroutine path
// nothing waited on the resetting side's socket; an event loop saw its
// EPOLLERR but, with the direction waiting for room, passed it by. Either
// way the session lasted until the silent side read, or for ever. The reset
// must end it, labelled with the resetting side's direction, alone; the
// goroutine path's watch that saw it goes away with the session; and the
// silent side, once the caller closed, reads a reset, not an EOF, since the
// bytes the relay held are lost. Each side resets, on every path.
//
// The relay's socket toward the silent side takes little (small buffers on
// both ends), and the test resets only once the relay's socket of the
// resetting side holds more bytes than that socket, the silent side's
// receive buffer and the half's pipe or buffer can take: the waiting
// direction can then never read up to the reset itself, whatever the
// timing (a reset leaves the bytes before it readable, then the error).
func TestPipeResetBehindStalledWrite(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		for _, resetter := range []string{"upstream", "client"} {
			for _, order := range []string{"fin, stall", "stall, fin", "no fin"} {
				t.Run(mode.name+"/"+resetter+" resets/"+order, func(t *testing.T) {
					t.Parallel()
					r := mode.relay(t)
					g, silent, toSilent, loud, fromLoud, label := stalledRig(t, resetter)
					g.start(context.Background(), r)
					bound := mode.bound(t, silent, toSilent)
					if order == "fin, stall" {
						finished(t, silent, loud)
					}
					// <- the loud side sends more than the silent one can
					// ever take, without end (its write fails once it is
					// closed).
					sent := make(chan error, 1)
					go func() {
						_, err := loud.Write(make([]byte, 64<<20))
						sent <- err
					}()
					waitQueued(t, fromLoud, bound+1)
					if order == "stall, fin" {
						finished(t, silent, loud)
					}
					loud.SetLinger(0)
					loud.Close() // the reset
					<-sent
					res := g.wait(t)
					if !errors.Is(res.err, syscall.ECONNRESET) || !strings.HasPrefix(res.err.Error(), label) ||
						strings.Count(res.err.Error(), "relay: ") != 1 || errors.Is(res.err, os.ErrDeadlineExceeded) {
						t.Fatalf("Pipe: %v; want ECONNRESET labelled %q, alone", res.err, label)
					}
					waitWatchGone(t, &r.resets)
					// The caller closes: the silent side reads what reached
					// it, then a reset, as from the resetting peer directly;
					// an EOF would pass the stream cut short for a whole one.
					g.relayA.Close()
					g.relayB.Close()
					if _, err := io.Copy(io.Discard, silent); !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("the silent side read to %v once the session ended; want ECONNRESET", err)
					}
				})
			}
		}
	}
}

// stallModes are the paths the tests of a direction that waits for room at
// a silent peer run on: small pipes and buffers, so that the relay holds
// little; hold is the most a half holds (its pipe or its buffer).
var stallModes = []stallMode{
	{"goroutines, one-page pipes", Options{Loops: -1, PipeBytes: 4096}, false, 4096},
	{"copy", Options{ForceCopy: true, CopyBufferBytes: 4096}, false, 4096},
	{"refused", Options{Loops: -1, PipeBytes: 4096, CopyBufferBytes: 4096}, true, 4096},
	{"loop, one-page pipes", Options{Loops: 1, PipeBytes: 4096}, false, 4096},
	{"loop, small reads", Options{Loops: 1, PipeBytes: 4096, CopyBelow: 16 << 10}, false, 16 << 10},
}

type stallMode struct {
	name   string
	opts   Options
	refuse bool // every splice is refused (EINVAL): the copy fallback
	hold   int
}

// goroutines reports whether m runs its sessions on the goroutine path.
func (m stallMode) goroutines() bool { return m.opts.Loops < 0 || m.opts.ForceCopy }

// relay makes m's Relay, closed at the test's end.
func (m stallMode) relay(t *testing.T) *Relay {
	r := New(m.opts)
	t.Cleanup(func() { r.Close() })
	if m.refuse {
		r.refuseSplice = unix.EINVAL
	}
	return r
}

// bound is what the silent side can ever take from the relay: its receive
// buffer, the relay's send buffer toward it and the one 64 KiB segment a
// send may put past that buffer, and the half's pipe or buffer.
func (m stallMode) bound(t *testing.T, silent, toSilent *net.TCPConn) int {
	return bufBytes(t, silent, unix.SO_RCVBUF) + bufBytes(t, toSilent, unix.SO_SNDBUF) + 64<<10 + m.hold
}

// finished has the silent side half-close and waits until the loud side
// read the EOF: that direction has passed its FIN on.
func finished(t *testing.T, silent, loud *net.TCPConn) {
	t.Helper()
	silent.CloseWrite()
	if n, err := loud.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("loud side read %d bytes, %v; want EOF", n, err)
	}
}

// waitWatchGone waits until w has no epoll instance, and so no goroutine:
// it closes it, under w.mu, as it returns.
func waitWatchGone(t *testing.T, w *resetWatch) {
	t.Helper()
	gone := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.file == nil && len(w.byID) == 0
	}
	for end := time.Now().Add(safety); !gone(); runtime.Gosched() {
		if time.Now().After(end) {
			t.Fatal("the reset watch still holds its epoll instance after the session ended")
		}
	}
}

// stalledRig is a rig whose side that does not reset (silent) has a small
// receive buffer, and whose relay socket toward it (toSilent) a small send
// buffer, so that the silent side, reading nothing, takes little; the
// relay socket of the resetting side (fromLoud) gets a large receive
// buffer. label is the direction that reads the resetting side.
func stalledRig(t *testing.T, resetter string) (g *rig, silent, toSilent, loud, fromLoud *net.TCPConn, label string) {
	t.Helper()
	small, large := sizeBuffers(syscall.SO_RCVBUF, 1, syscall.SO_SNDBUF, 1), sizeBuffers(syscall.SO_RCVBUF, 4<<20)
	none := &net.ListenConfig{}
	g = &rig{done: make(chan pipeResult, 1)}
	if resetter == "upstream" {
		// client dials relayA: the client's receive buffer and relayA's
		// send buffer are small.
		g.client, g.relayA = tcpPairWith(t, &net.ListenConfig{Control: small}, &net.Dialer{Control: small})
		g.relayB, g.upstream = tcpPairWith(t, none, &net.Dialer{Control: large})
		g.armSafety()
		return g, g.client, g.relayA, g.upstream, g.relayB, "relay: upstream->client: "
	}
	g.client, g.relayA = tcpPairWith(t, &net.ListenConfig{Control: large}, &net.Dialer{})
	g.relayB, g.upstream = tcpPairWith(t, &net.ListenConfig{Control: small}, &net.Dialer{Control: small})
	g.armSafety()
	return g, g.upstream, g.relayB, g.client, g.relayA, "relay: client->upstream: "
}

// sizeBuffers sets socket buffer options, given as option, bytes pairs,
// on the sockets of a listener or a dialer, before they connect.
func sizeBuffers(optBytes ...int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			for i := 0; i+1 < len(optBytes) && err == nil; i += 2 {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, optBytes[i], optBytes[i+1])
			}
		})
		return errors.Join(cerr, err)
	}
}

// bufBytes returns a socket buffer's size as the kernel accounts it
// (SO_RCVBUF or SO_SNDBUF).
func bufBytes(t *testing.T, c *net.TCPConn, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var gerr error
	if err := rc.Control(func(fd uintptr) { n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return n
}

// TestPipeResetTakenElsewhere: on the goroutine path, a direction that once
// waited for room keeps its source registered with the reset watch until
// its EOF. When that source then resets while the direction waits to read
// it, the watch and the direction both wake; when the watch takes the error
// first (SO_ERROR clears it), the direction's read answers 0, as an EOF
// would, and it passed that on as a FIN: upstream read a stream cut short as
// if whole. The test holds the direction's read (testHookRead) until the
// watch took the error (testHookTaken), the order the scheduler picks now
// and then; upstream must then read every byte, then a reset.
func TestPipeResetTakenElsewhere(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		if !mode.goroutines() {
			continue
		}
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := mode.relay(t)
			g, silent, toSilent, loud, fromLoud, _ := stalledRig(t, "client")
			g.start(context.Background(), r)
			bound := mode.bound(t, silent, toSilent)
			const n = 128 << 10
			sent := make(chan error, 1)
			go func() {
				_, err := loud.Write(make([]byte, n))
				sent <- err
			}()
			waitQueued(t, fromLoud, bound+1) // the direction waited for room: registered
			var read atomic.Int64
			got := make(chan error, 1)
			go func() {
				b := make([]byte, 64<<10)
				for {
					m, err := silent.Read(b)
					read.Add(int64(m))
					if err != nil {
						got <- err
						return
					}
				}
			}()
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			// Upstream has it all: the direction waits to read.
			for end := time.Now().Add(safety); read.Load() < n; runtime.Gosched() {
				if time.Now().After(end) {
					t.Fatalf("upstream read %d bytes of %d", read.Load(), n)
				}
			}
			gate := &readGate{open: make(chan struct{})}
			readGates.Store(fromLoud, gate)
			defer readGates.Delete(fromLoud)
			loud.SetLinger(0)
			loud.Close() // a reset, no FIN
			g.wait(t)
			if !gate.held.Load() {
				t.Log("the direction's read did not run after the reset (the watch's abort came first): the race was not met")
			}
			g.relayA.Close()
			g.relayB.Close()
			if err := <-got; read.Load() != n || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("upstream read %d bytes, then %v; want %d, then ECONNRESET", read.Load(), err, n)
			}
		})
	}
}

// TestPipeResetTakenByWrite: on the goroutine path the client resets while
// upstream->client waits for room at it, holding bytes, and
// client->upstream waits to read it. When upstream->client's write meets
// the reset first, the kernel clears the error as it answers; the other
// direction's read then answers 0, as an EOF would, and it passed that on
// to upstream as a FIN. The test holds that read (testHookRead) until the
// write failed (testHookTaken); upstream must read a reset, not an EOF.
func TestPipeResetTakenByWrite(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		if !mode.goroutines() {
			continue
		}
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := mode.relay(t)
			g, silent, toSilent, loud, fromLoud, _ := stalledRig(t, "upstream") // silent: the client
			g.start(context.Background(), r)
			bound := mode.bound(t, silent, toSilent)
			if _, err := loud.Write(make([]byte, bound+64<<10)); err != nil { // relayB takes what the relay cannot
				t.Fatal(err)
			}
			waitQueued(t, fromLoud, 1) // upstream->client waits for room at the client
			gate := &readGate{open: make(chan struct{})}
			readGates.Store(toSilent, gate) // client->upstream reads relayA only once its error was taken
			defer readGates.Delete(toSilent)
			silent.SetLinger(0)
			silent.Close() // the client resets
			g.wait(t)
			if !gate.held.Load() {
				t.Log("client->upstream's read did not run after the reset: the race was not met")
			}
			g.relayA.Close()
			g.relayB.Close()
			loud.SetReadDeadline(time.Now().Add(safety))
			if n, err := loud.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("upstream read %d bytes, %v once the client reset; want ECONNRESET, not the client's EOF", n, err)
			}
		})
	}
}

// readGates holds, per goroutine-path direction's source, a gate that its
// reads wait at until the socket's error was taken (takeError).
var readGates sync.Map // *net.TCPConn -> *readGate

type readGate struct {
	open chan struct{}
	once sync.Once
	held atomic.Bool // a read waited at the gate
}

func init() {
	testHookRead = func(src *net.TCPConn) {
		if v, ok := readGates.Load(src); ok {
			g := v.(*readGate)
			g.held.Store(true)
			select {
			case <-g.open:
			case <-time.After(safety):
			}
		}
	}
	testHookTaken = func(c *net.TCPConn) {
		if v, ok := readGates.Load(c); ok {
			g := v.(*readGate)
			g.once.Do(func() { close(g.open) })
		}
	}
}
