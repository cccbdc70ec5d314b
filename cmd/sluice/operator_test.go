//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPipeSizeRefusedWarns starts sluice, without CAP_SYS_RESOURCE, with a
// --pipe-size above fs.pipe-max-size: the kernel refuses it, and the relay's
// pipes stay at the kernel's default size (64 KiB, a sixteenth of sluice's
// default), so the start says so in one warning naming the flag, as it does
// for a socket option the kernel refuses (README, Tuning). A size the kernel
// grants gives no warning. The build before said nothing.
func TestPipeSizeRefusedWarns(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		t.Skip(err)
	}
	maxSize, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if maxSize >= 1<<30 {
		t.Skipf("fs.pipe-max-size is %d: no size above it to refuse", maxSize)
	}
	type result struct {
		logs    [2]string // of a refused size, then of a granted one
		insts   []*instance
		refused bool // the kernel refused the size to this thread
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		// Credentials are per thread in Linux: as root, this thread alone
		// turns into an unused uid, which drops its effective capabilities
		// (CAP_SYS_RESOURCE with them). The locked thread ends with this
		// goroutine, never running another.
		runtime.LockOSThread()
		if os.Geteuid() == 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 54321, 54321, 0); e != 0 {
				r.err = fmt.Errorf("setresuid: %w", e)
				return
			}
		}
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			r.err = err
			return
		}
		_, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, 2*maxSize)
		unix.Close(fds[0])
		unix.Close(fds[1])
		r.refused = err != nil
		for i, size := range []int{2 * maxSize, maxSize} {
			args := []string{"--listeners", "1", "--listen", "127.0.0.1:0", "--pipe-size", strconv.Itoa(size)}
			cfg, err := parseFlags(args, io.Discard)
			if err != nil {
				r.err = err
				return
			}
			var log syncBuffer
			inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				r.err = fmt.Errorf("start(%q): %w", args, err)
				return
			}
			r.insts = append(r.insts, inst)
			r.logs[i] = log.String()
		}
	}()
	r := <-done
	for _, inst := range r.insts {
		t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.refused {
		t.Skip("the kernel grants pipes above fs.pipe-max-size here (CAP_SYS_RESOURCE that setresuid does not drop)")
	}
	if got := strings.Count(r.logs[0], "--pipe-size"); got != 1 {
		t.Errorf("--pipe-size %d above fs.pipe-max-size %d: %d warnings naming --pipe-size; want 1\n%s", 2*maxSize, maxSize, got, r.logs[0])
	}
	if r.logs[1] != "" {
		t.Errorf("--pipe-size %d, fs.pipe-max-size: want no warning, got\n%s", maxSize, r.logs[1])
	}
}

// TestExampleConfigClientRules loads contrib/sluice.toml, whose client rules
// say they let in local clients: they do, and keep others out. The example
// used to pair its loopback allow rule with client-default-policy "allow",
// under which the rule changed nothing and every client got in.
func TestExampleConfigClientRules(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"--config", "../../contrib/sluice.toml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lv, _, err := buildLive(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{{"127.0.0.1", true}, {"::1", true}, {"192.0.2.1", false}, {"2001:db8::1", false}} {
		if got := lv.clients.allowed(0, nil, netip.MustParseAddr(tc.ip), 0); got != tc.want {
			t.Errorf("client %s allowed = %v; want %v (the example's client rules)", tc.ip, got, tc.want)
		}
	}
}
