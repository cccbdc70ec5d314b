package relay

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestPipeUrgentData: a byte sent with MSG_OOB (telnet's Synch, FTP's ABOR)
// puts an urgent mark in the stream, which splice never passes: the
// direction stalled there for good, or, with the FIN already in, ended at
// the mark and dropped the rest. The stream around the urgent byte arrives
// whole, the urgent byte itself left out (it is out of band; a read(2)
// relay drops it too), on every path, with the rest following at once or
// after a pause, and with or without the FIN behind it.
func TestPipeUrgentData(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"loops", Options{}}, {"goroutines", Options{Loops: -1}}, {"copy", Options{ForceCopy: true}}, {"copy below", Options{CopyBelow: 16 << 10}}} {
		for _, tc := range []struct {
			name       string
			pause      bool // the rest is sent after the urgent byte was seen
			closeWrite bool
		}{{"together", false, false}, {"together+fin", false, true}, {"paused", true, false}, {"paused+fin", true, true}} {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				r := New(mode.opts)
				defer r.Close()
				g := newRig(t).start(context.Background(), r)
				rc, err := g.client.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				write := func(b string, flags int) {
					t.Helper()
					var serr error
					if err := rc.Write(func(fd uintptr) bool {
						serr = syscall.Sendto(int(fd), []byte(b), flags, nil)
						return serr != syscall.EAGAIN
					}); err != nil || serr != nil {
						t.Fatalf("send %q: %v, %v", b, err, serr)
					}
				}
				write("abc", 0)
				write("X", syscall.MSG_OOB)
				if tc.pause {
					if _, err := io.ReadFull(g.upstream, make([]byte, 3)); err != nil {
						t.Fatalf("before the mark: %v", err)
					}
				}
				write("def", 0)
				want := "abcdef"
				if tc.pause {
					want = "def"
				}
				got := make([]byte, len(want))
				if tc.closeWrite {
					g.client.CloseWrite()
					all, err := io.ReadAll(g.upstream)
					if err != nil {
						t.Fatalf("read to EOF: %v", err)
					}
					got = all
				} else if _, err := io.ReadFull(g.upstream, got); err != nil {
					t.Fatalf("read %d bytes: %v (got %q)", len(want), err, got)
				}
				if string(got) != want {
					t.Fatalf("upstream got %q, want %q", got, want)
				}
			})
		}
	}
}

// TestPipeUrgentSignalled: a read that reaches the urgent mark while the
// reading thread has a signal pending (the runtime's preemption SIGURG, a
// profiler's SIGPROF) answers EAGAIN on Linux, though the bytes behind the
// mark are in; no edge comes for them, and the direction waited until the
// client sent more. The test hook stands for the signal: it cuts the first
// two reads at the mark short (two: the runtime poller may still report,
// once, bytes that came before the session started, which would hide a
// stall at the first). Everything the client sent is in the relay's socket
// before the session starts, so that no later edge can hide a stall; the
// rest must still arrive, on every path.
func TestPipeUrgentSignalled(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"loops", Options{}}, {"goroutines", Options{Loops: -1}}, {"copy", Options{ForceCopy: true}}, {"copy below", Options{CopyBelow: 16 << 10}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := New(mode.opts)
			defer r.Close()
			g := newRig(t)
			rc, err := g.client.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []struct {
				b     string
				flags int
			}{{"abc", 0}, {"X", syscall.MSG_OOB}, {"def", 0}} {
				var serr error
				if err := rc.Write(func(fd uintptr) bool {
					serr = syscall.Sendto(int(fd), []byte(m.b), m.flags, nil)
					return serr != syscall.EAGAIN
				}); err != nil || serr != nil {
					t.Fatalf("send %q: %v, %v", m.b, err, serr)
				}
			}
			waitAcked(t, g.client)
			fd, err := rawFd(g.relayA)
			if err != nil {
				t.Fatal(err)
			}
			cuts := new(atomic.Int32)
			cuts.Store(2)
			markCuts.Store(fd, cuts)
			t.Cleanup(func() { markCuts.Delete(fd) }) // before the sockets close
			g.start(context.Background(), r)
			got := make([]byte, 6)
			if _, err := io.ReadFull(g.upstream, got); err != nil || string(got) != "abcdef" {
				t.Fatalf("upstream got %q, %v; want \"abcdef\"", got, err)
			}
			if n := cuts.Load(); n != 0 {
				t.Fatalf("%d reads at the mark left to cut; the relay read past it without meeting the hook", n)
			}
			g.client.CloseWrite()
			g.upstream.CloseWrite()
			if res := g.wait(t); res.err != nil {
				t.Fatalf("Pipe: %v", res.err)
			}
		})
	}
}

// markCuts holds, per socket descriptor, the reads at its urgent mark that
// testHookCutAtMark still cuts short.
var markCuts sync.Map

func init() {
	testHookCutAtMark = func(fd int) bool {
		v, ok := markCuts.Load(fd)
		if !ok || !atMark(fd) {
			return false
		}
		cuts := v.(*atomic.Int32)
		for n := cuts.Load(); n > 0; n = cuts.Load() {
			if cuts.CompareAndSwap(n, n-1) {
				return true
			}
		}
		return false
	}
}
