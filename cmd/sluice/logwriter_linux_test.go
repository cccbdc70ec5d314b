package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStuckStderrExits: sluice whose stderr is a pipe that nobody reads any
// more still serves sessions, and exits on SIGTERM. Before the log went
// through logWriter, each session's access log line blocked once the pipe
// was full, and so did the "shutting down" line: SIGTERM never ended it.
func TestStuckStderrExits(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	var size int // the pipe's, a page at least
	r, cmd, exited := sluiceStderrPipe(t, func(r *os.File) {
		var err error
		if size, err = unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
			t.Fatalf("F_SETPIPE_SZ: %v", err)
		}
	}, "--listen", "127.0.0.1:0", "--listeners", "1", "--access-log", "--drain-timeout", "1s")

	var addr string
	sc := bufio.NewScanner(r)
	for addr == "" && sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "sluice listening") {
			addr = lineAddr(line)
		}
	}
	if addr == "" {
		t.Fatalf("no listening line: %v", sc.Err())
	}
	// From here nobody reads: sessions fill the pipe with their lines. A
	// pipe of one page takes a write only whole, so it stops taking lines
	// while up to a line's length is still free: nearly full is less than
	// 1 KiB free, and the 20 sessions after it write more than that (an
	// access log line is over 150 bytes).
	full := func() bool {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ) // FIONREAD
		return err == nil && n > size-1024
	}
	sessions := 0
	for ; !full(); sessions++ {
		i := sessions
		if i == 1000 {
			n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
			t.Fatalf("1,000 sessions did not nearly fill a %d-byte stderr pipe (%d bytes in it, %v): is the access log on?", size, n, err)
		}
		if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	for i := range 20 { // more lines than the pipe has room for, each session still served
		if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
			t.Fatalf("session %d after stderr filled up: %v", i, err)
		}
	}
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0", err)
		}
		took := time.Since(sent)
		t.Logf("stderr nearly full after %d sessions, 20 more served; exit 0 %v after SIGTERM", sessions, took.Round(time.Millisecond))
		if took < logFlushWait {
			t.Errorf("exit %v after SIGTERM, sooner than the %v it waits for a stuck log: stderr was not full, so this tested nothing", took, logFlushWait)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sluice did not exit within 20 s of SIGTERM with its stderr full")
	}
}

// TestStderrReaderGone: sluice whose stderr is a pipe whose reader has
// exited (`sluice 2>&1 | head -1`, a log collector that died) goes on
// serving: its log writes fail with EPIPE, and the lines they carried are
// counted as dropped, where the runtime's default for a broken pipe on fd 2
// killed the process with SIGPIPE at the first line.
func TestStderrReaderGone(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	r, _, exited := sluiceStderrPipe(t, nil, "--listen", "127.0.0.1:0", "--listeners", "1", "--access-log", "--metrics", "127.0.0.1:0")

	var addr, metrics string
	sc := bufio.NewScanner(r)
	for (addr == "" || metrics == "") && sc.Scan() {
		switch line := sc.Text(); {
		case strings.Contains(line, "sluice listening"):
			addr = lineAddr(line)
		case strings.Contains(line, "metrics listening"):
			metrics = lineAddr(line)
		}
	}
	if addr == "" || metrics == "" {
		t.Fatalf("no listening lines: %v", sc.Err())
	}
	r.Close() // the reader is gone: a write to the pipe now fails
	if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
		t.Fatalf("a session after the reader left: %v", err)
	}
	// Its access line was written, and failed, once the metric counts it.
	lost := waitFor(10*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("sluice exited once its stderr's reader was gone: %v", err)
		default:
		}
		return value(scrape(t, metrics), "sluice_log_lines_dropped_total") >= 1
	})
	if !lost {
		t.Fatal("sluice_log_lines_dropped_total never counted the line stderr refused")
	}
	if err := serveOneEcho(addr, echo, "", "", 10*time.Second); err != nil {
		t.Fatalf("a session after a failed log write: %v", err)
	}
	select {
	case err := <-exited:
		t.Fatalf("sluice exited: %v", err)
	default:
	}
}

// sluiceStderrPipe starts sluice with args, its stderr the write end of a
// pipe, after setup (when not nil) ran on the read end, and returns the read
// end (closed at cleanup), the command, and a channel that gets its exit.
func sluiceStderrPipe(t *testing.T, setup func(*os.File), args ...string) (*os.File, *exec.Cmd, <-chan error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if setup != nil {
		setup(r)
	}
	cmd := sluiceCmd(t.Context(), args...)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return r, cmd, exited
}
