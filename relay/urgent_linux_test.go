package relay

import (
	"context"
	"io"
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
