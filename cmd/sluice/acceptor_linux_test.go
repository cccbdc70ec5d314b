package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAcceptInline: with bare sockets a session that never has to wait is
// served on its accept loop's goroutine, and one that waits (a client that
// has not sent its whole greeting, a connect still in progress) hands the
// loop on, so that the next client is served meanwhile. After a hand-on
// the loop starts the next inlineRetry-1 sessions on goroutines of their
// own, and tries inline again with the one after.
func TestAcceptInline(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)

	t.Run("pipelined", func(t *testing.T) {
		t.Parallel()
		addr, inst := startSluice(t)
		a := inst.acceptors[0]
		if !a.inline() {
			t.Fatal("the accept loop of a default sluice does not serve inline")
		}
		const n = 64
		for i := range n {
			if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
		}
		// inlined moves once serveConn has returned, just after the
		// hand-over to the relay that let the echo through.
		if !waitFor(10*time.Second, func() bool { return a.inlined.Load()+a.handOns.Load()+a.spawned.Load() == n }) {
			t.Fatalf("inlined %d + handed on %d + spawned %d, want %d sessions", a.inlined.Load(), a.handOns.Load(), a.spawned.Load(), n)
		}
		// A pipelined CONNECT to a loopback target waits for nothing: its
		// greeting is in the socket at accept (--defer-accept) and the
		// kernel completes a loopback connect within the system call. A
		// busy machine may defer that to ksoftirqd now and then, and each
		// such hand-on sends up to inlineRetry-1 sessions to goroutines.
		if in := a.inlined.Load(); in < n/2 {
			t.Errorf("%d of %d pipelined sessions served inline (%d handed on), want at least %d", in, n, a.handOns.Load(), n/2)
		}
	})

	t.Run("partial-greeting", func(t *testing.T) {
		t.Parallel()
		addr, inst := startSluice(t)
		a := inst.acceptors[0]
		slow, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		slow.SetDeadline(time.Now().Add(10 * time.Second))
		req := connectReq(echo)
		mustWrite(t, slow, req[:1]) // -> the version byte alone: the next read would block
		if !waitFor(10*time.Second, func() bool { return a.handOns.Load() == 1 }) {
			t.Fatalf("handed on %d times with a client inside its greeting, want 1", a.handOns.Load())
		}
		if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
			t.Fatalf("a client behind a half-sent greeting: %v", err)
		}
		// The slow client's session goes on in the goroutine it kept.
		mustWrite(t, slow, append(req[1:], 'x'))
		got := make([]byte, 2+10+1)
		if _, err := io.ReadFull(slow, got); err != nil || got[1] != 0 || got[3] != 0 || got[12] != 'x' {
			t.Fatalf("slow client: %x, %v; want method 0, reply 0 and the echo", got, err)
		}
		// Backing off: the client above and the next ones up to
		// inlineRetry-1 got goroutines of their own.
		for i := 1; i < inlineRetry-1; i++ {
			if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
				t.Fatalf("session %d after the hand-on: %v", i+1, err)
			}
		}
		if n := a.inlined.Load(); n != 0 {
			t.Fatalf("%d sessions served inline within %d of a hand-on, want 0", n, inlineRetry-1)
		}
		if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
			t.Fatalf("session %d after the hand-on: %v", inlineRetry, err)
		}
		if !waitFor(10*time.Second, func() bool { return a.inlined.Load()+a.handOns.Load() == 2 }) {
			t.Fatalf("session %d after a hand-on: inlined %d, handed on %d; want it through the inline path", inlineRetry, a.inlined.Load(), a.handOns.Load()-1)
		}
	})

	t.Run("pending-dial", func(t *testing.T) {
		t.Parallel()
		// A dial that would take a minute: a client served behind it
		// within serveOneEcho's 10 s was not waiting for it.
		addr, inst := startSluice(t, "--dial-timeout", "60s")
		a := inst.acceptors[0]
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		mustWrite(t, c, connectReq(fullListener(t))) // <- SYNs dropped: the connect stays in progress
		if !waitFor(10*time.Second, func() bool { return a.handOns.Load() == 1 }) {
			t.Fatalf("handed on %d times with a connect in progress, want 1", a.handOns.Load())
		}
		if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
			t.Fatalf("a client behind a pending dial: %v", err)
		}
		// The dial is still pending: its client, which pipelined greeting
		// and request, has no answer yet (the method reply goes out with
		// the request's).
		got := make([]byte, 12)
		c.SetReadDeadline(time.Now()) // a read that does not wait
		if n, err := c.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("pending client: %x, %v; want nothing yet, its dial pending", got[:n], err)
		}
	})
}

// TestStuckAccessLogSparesAcceptLoop: a session served inline that fails
// while the access log cannot be written (a stderr pipe nobody drains)
// writes its line off the accept loop, which goes on serving.
func TestStuckAccessLogSparesAcceptLoop(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	addr, w, _ := startStuckLog(t)
	w.armed.Store(true) // after the listening line

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustWrite(t, c, connectReq(closed)) // <- 0x05 connection refused, then the stuck line
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the refused session wrote no access log line")
	}
	if err := serveOneEcho(addr, echo, "", "", 5*time.Second); err != nil {
		t.Fatalf("a client after a session stuck in its access log line: %v", err)
	}
}

// TestStuckDeniedLogSparesAcceptLoop: with the access log off, a denied
// request's own info line is written off the accept loop too (a logger
// handed to the server may block), which goes on serving.
func TestStuckDeniedLogSparesAcceptLoop(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	cfg := writeConfig(t, "[[rule]]\naction = \"deny\"\nports = [\"25\"]\n")
	addr, w, _ := startStuckLog(t, "--access-log=false", "--config", cfg)
	w.armed.Store(true) // after the listening line
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustWrite(t, c, connectReq(netip.MustParseAddrPort("127.0.0.1:25"))) // <- 0x02, then the stuck "denied" line
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the denied session wrote no log line")
	}
	if err := serveOneEcho(addr, echo, "", "", 5*time.Second); err != nil {
		t.Fatalf("a client after a session stuck in its denied line: %v", err)
	}
}

// TestShutdownEndsAcceptBackoff: shutdown does not wait out the delay of an
// accept loop backing off after failed accepts (up to 1 s; an hour here),
// on either accept path. shutdown(2) on the listening socket makes each accept fail
// (EINVAL) as a full descriptor table would, without lowering the
// descriptor limit of the whole test process.
func TestShutdownEndsAcceptBackoff(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(append([]string{"--listeners", "1", "--listen", "127.0.0.1:0"}, flags...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			// Every back-off waits an hour, the first included: a
			// shutdown that waited one out would not end in this test.
			cfg.acceptBackoff = time.Hour
			waiting := &lineWatch{want: "backoff=1h0m0s", seen: make(chan struct{})}
			inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(waiting, nil)))
			if err != nil {
				t.Fatal(err)
			}
			rc, err := inst.listeners[0].SyscallConn()
			if err == nil {
				rc.Control(func(fd uintptr) { err = syscall.Shutdown(int(fd), syscall.SHUT_RD) })
			}
			if err != nil {
				inst.shutdown(0)
				t.Fatal(err)
			}
			select {
			case <-waiting.seen: // <- the loop logs its delay, then waits
			case <-time.After(20 * time.Second):
				inst.shutdown(0)
				t.Fatal("no accept failure logged with a 1 h backoff")
			}
			done := make(chan struct{})
			go func() {
				inst.shutdown(0)
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second): // safety net only: the back-off is an hour
				t.Fatal("shutdown waited for an accept loop's back-off to end")
			}
		})
	}
}

// lineWatch is a log writer that closes seen once a line holds want.
type lineWatch struct {
	want string
	seen chan struct{}
	once sync.Once
}

func (w *lineWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.want)) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// TestAcceptLogDue: the first accept failure is logged at once, the next
// ones at most once a second, counted on the monotonic clock from the
// server's start.
func TestAcceptLogDue(t *testing.T) {
	s := &server{started: time.Now()}
	if !s.acceptLogDue() {
		t.Fatal("first accept failure not due")
	}
	if s.acceptLogDue() {
		t.Fatal("second accept failure due within the same second")
	}
	s.lastAcceptLog.Add(-int64(time.Second))
	if !s.acceptLogDue() {
		t.Fatal("accept failure not due a second after the last line")
	}
	if s.acceptLogDue() {
		t.Fatal("accept failure due right after the last line")
	}
}
