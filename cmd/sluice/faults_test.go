package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// noLeak runs fault and then checks that the process's goroutines and
// sockets come back to where they were before it. Tests that use it must
// not be parallel: they count the whole process.
func noLeak(t *testing.T, fault func(t *testing.T)) {
	t.Helper()
	baseG, baseSockets := runtime.NumGoroutine(), countSockets(t)
	fault(t)
	if t.Failed() {
		return
	}
	if !waitFor(10*time.Second, func() bool { return runtime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d after the fault, baseline %d\n%s", runtime.NumGoroutine(), baseG, buf[:runtime.Stack(buf, true)])
	}
	if !waitFor(10*time.Second, func() bool { return countSockets(t) <= baseSockets }) {
		t.Fatalf("sockets: %d open after the fault, baseline %d", countSockets(t), baseSockets)
	}
}

// expectEnd reads c until the server ends it and fails the test when it does
// not within the safety net. It returns what was read.
func expectEnd(t *testing.T, c net.Conn, within time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open %v after the fault (%d bytes read)", within, len(got))
	}
	return got
}

// faultPattern returns n bytes of a fixed non-repeating-looking pattern.
func faultPattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestFaultsMidStream breaks sessions at each stage a network breaks them
// and checks that each ends cleanly: the right reply before any success,
// both sockets closed after, and no goroutine or socket left behind.
// Not parallel: it counts the whole process.
func TestFaultsMidStream(t *testing.T) {
	addr, _ := startSluice(t, "--handshake-timeout", "5s")
	t.Run("target-resets", func(t *testing.T) {
		noLeak(t, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			sent := faultPattern(256 << 10)
			done := make(chan error, 1)
			go func() {
				up, err := l.Accept()
				if err != nil {
					done <- err
					return
				}
				_, err = up.Write(sent)
				if err == nil {
					_, err = io.ReadFull(up, make([]byte, 4)) // the client's "ping": mid-transfer
				}
				up.(*net.TCPConn).SetLinger(0)
				up.Close() // RST
				done <- err
			}()
			c := connectRaw(t, addr, l.Addr().(*net.TCPAddr)) // 0x00 first
			defer c.Close()
			mustWrite(t, c, []byte("ping"))
			if err := <-done; err != nil {
				t.Fatalf("target: %v", err)
			}
			got := expectEnd(t, c, 10*time.Second)
			if !bytes.HasPrefix(sent, got) {
				t.Fatalf("client got %d bytes that are not a prefix of what the target sent", len(got))
			}
		})
	})
	t.Run("client-vanishes", func(t *testing.T) {
		noLeak(t, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			chunk := faultPattern(64 << 10)
			done := make(chan error, 1)
			go func() {
				up, err := l.Accept()
				if err != nil {
					done <- err
					return
				}
				defer up.Close()
				up.SetDeadline(time.Now().Add(10 * time.Second)) // safety net
				for err == nil {                                 // until sluice closes the upstream
					_, err = up.Write(chunk)
				}
				done <- err
			}()
			c := connectRaw(t, addr, l.Addr().(*net.TCPAddr))
			if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil { // mid-transfer
				t.Fatal(err)
			}
			c.SetLinger(0)
			c.Close() // RST
			if err := <-done; err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("target's writes after the client vanished: %v, want the connection closed", err)
			}
		})
	})
	t.Run("client-vanishes-silently", func(t *testing.T) {
		// The client closes (FIN, not RST) while the target is silent: the
		// target sees EOF and, once it closes too, sluice releases both.
		noLeak(t, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			done := make(chan error, 1)
			go func() {
				up, err := l.Accept()
				if err != nil {
					done <- err
					return
				}
				defer up.Close()
				up.SetDeadline(time.Now().Add(10 * time.Second)) // safety net
				_, err = io.Copy(io.Discard, up)
				done <- err
			}()
			c := connectRaw(t, addr, l.Addr().(*net.TCPAddr))
			mustWrite(t, c, []byte("bye"))
			c.Close()
			if err := <-done; err != nil {
				t.Fatalf("target: %v, want EOF after the client's close", err)
			}
		})
	})
	t.Run("dns-failure", func(t *testing.T) {
		noLeak(t, func(t *testing.T) {
			c := dialSluice(t, addr)
			mustWrite(t, c, []byte{5, 1, 0, 5, 1, 0, 3, 14, 'n', 'o', 's', 'u', 'c', 'h', '.', 'i', 'n', 'v', 'a', 'l', 'i', 'd', 0, 80})
			expect(t, c, []byte{5, 0})
			if rep, _ := readReply(t, c); rep != 0x04 {
				t.Fatalf("REP = %#02x, want 0x04 host unreachable", rep)
			}
			expectEnd(t, c, 10*time.Second)
			c.Close()
		})
	})
}

// TestDrainEndsNetHandshake: with --net-sockets, a client stalled in its
// handshake is closed when the drain times out, as a bare client is (the
// waiter), and the process exits; it used to wait on to the end of the
// client's --handshake-timeout (a minute here), holding the shutdown.
func TestDrainEndsNetHandshake(t *testing.T) {
	t.Parallel()
	p := startProc(t, "--listen", "127.0.0.1:0", "--listeners", "1", "--net-sockets",
		"--handshake-timeout", "1m", "--drain-timeout", "200ms")
	c := dialSluice(t, p.addr)
	mustWrite(t, c, []byte{5, 1, 0})
	expect(t, c, []byte{5, 0}) // the session now reads its request
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "drain timeout")
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, far under the minute
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client after the drain timed out: %d, %v; want its connection closed", n, err)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("exit: %v, want 0", err)
	}
}

// TestDrainEndsHandshakeWithoutWaiter is TestDrainEndsNetHandshake for bare
// client sockets on a server whose waiter could not be made (cfg.noWaiter):
// a handshake then waits in the client's os.File, which no shutdown closes,
// so the drain's end must end it rather than wait out its deadline.
func TestDrainEndsHandshakeWithoutWaiter(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "127.0.0.1:0", "--handshake-timeout", "1m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.noWaiter = true
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	c := dialSluice(t, inst.addrs()[0])
	mustWrite(t, c, []byte{5, 1, 0})
	expect(t, c, []byte{5, 0}) // the session now reads its request
	// The only shutdown: a second would close its queues again.
	go func() { inst.shutdown(200 * time.Millisecond); close(done) }()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, far under the minute
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client after the drain timed out: %d, %v; want its connection closed", n, err)
	}
}
