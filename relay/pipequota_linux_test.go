//go:build linux && (amd64 || arm64)

package relay

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPipePoolUserQuota runs the pool as an unprivileged user whose pipes
// reach fs.pipe-user-pages-soft: a pipe made then comes out short, and once
// the quota frees, the pool hands it out at full size again instead of
// relaying through it short for the rest of the process's life.
func TestPipePoolUserQuota(t *testing.T) {
	needRoot(t)
	soft := readSysctl(t, "fs/pipe-user-pages-soft")
	if soft == 0 {
		t.Skip("fs.pipe-user-pages-soft is 0: no quota to reach")
	}
	const want = 1 << 20
	if maxSize := readSysctl(t, "fs/pipe-max-size"); maxSize < want {
		t.Skipf("fs.pipe-max-size is %d: an unprivileged pipe cannot reach %d", maxSize, want)
	}
	asUser(t, 54321, func() error { return quotaRun(want, soft) })
}

// needRoot skips a test that acts as another user unless it runs as root
// (or, with SLUICE_REQUIRE_NETNS=1, as CI sets, fails it).
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		const why = "needs root to act as another user on one thread"
		if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
			t.Fatal(why + " (SLUICE_REQUIRE_NETNS=1)")
		}
		t.Skip(why)
	}
}

// asUser runs run on a thread of its own turned into uid (credentials are
// per thread in Linux: the saved uid stays 0, so it could return; it never
// does: a locked thread ends with its goroutine), and fails t with its
// error.
func asUser(t *testing.T, uid int, run func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0); e != 0 {
			done <- fmt.Errorf("setresuid: %w", e)
			return
		}
		done <- run()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// quotaRun is the test's body, on the unprivileged thread.
func quotaRun(want, soft int) error {
	pp := newPipePool(want, 8)
	defer pp.close()
	full, err := pp.get()
	if err != nil {
		return err
	}
	if full.size < want {
		return fmt.Errorf("first pipe got %d bytes; want %d (another process of uid 54321 holds pipes?)", full.size, want)
	}
	// Fill the user's quota with pipes of another owner.
	var hog []*pipe
	defer func() {
		for _, p := range hog {
			p.close()
		}
	}()
	for range soft/(want/4096) + 2 {
		p, err := newPipe(want)
		if err != nil {
			return err
		}
		hog = append(hog, p)
		if p.size < want {
			break
		}
	}
	short, err := pp.get()
	if err != nil {
		return err
	}
	if short.size >= want {
		return errors.New("the quota did not cut a new pipe: cannot test")
	}
	pp.put(full)
	pp.put(short)
	// With the quota used up, the full pipe goes first.
	if p, err := pp.get(); err != nil || p != full {
		return fmt.Errorf("under the quota, get = %p (%v); want the full pipe", p, err)
	}
	pp.put(full)
	for _, p := range hog {
		p.close()
	}
	hog = nil
	if p, err := pp.get(); err != nil || p != full {
		return fmt.Errorf("quota freed: get = %p (%v); want the full pipe first", p, err)
	}
	defer full.close()
	p, err := pp.get()
	if err != nil {
		return err
	}
	defer p.close()
	if p != short || p.size < want {
		return fmt.Errorf("quota freed: get = %p with %d bytes; want the short pipe %p grown to %d", p, p.size, short, want)
	}
	return nil
}

func readSysctl(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Skipf("cannot read %s: %v", name, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}
