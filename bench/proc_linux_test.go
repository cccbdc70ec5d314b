package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSampleProcSelf is not parallel: it counts the whole process's
// descriptors, which other tests open and close.
func TestSampleProcSelf(t *testing.T) {
	before, err := SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the kernel's count (in clock ticks) shows it, or give
	// up after 10 s of trying: on a loaded machine 50 ms of wall time may
	// buy the process no tick at all.
	burnCPU(t, before.CPU)
	var files []*os.File
	for range 10 {
		f, err := os.Open("/proc/self/stat")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	after, err := SampleProc(os.Getpid())
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if before.FDs == nil || after.FDs == nil {
		t.Fatalf("samples %+v, %+v: descriptors unknown for this process's own", before, after)
	}
	if before.RSSBytes <= 0 || *before.FDs < 3 || before.Procs < 1 {
		t.Errorf("implausible sample %+v, %d fds", before, *before.FDs)
	}
	if after.CPU <= before.CPU {
		t.Errorf("CPU did not grow: %v then %v", before.CPU, after.CPU)
	}
	if *after.FDs < *before.FDs+10 {
		t.Errorf("FDs %d then %d; want at least 10 more", *before.FDs, *after.FDs)
	}
}

func TestSampleProcMissing(t *testing.T) {
	t.Parallel()
	if _, err := SampleProc(1 << 30); err == nil {
		t.Fatal("SampleProc of a PID that cannot exist succeeded")
	}
}

// burnCPU spins until this process's CPU time, as SampleProc reads it, is
// past was.
func burnCPU(t *testing.T, was time.Duration) {
	t.Helper()
	giveUp := time.Now().Add(10 * time.Second)
	for time.Now().Before(giveUp) {
		spin := time.Now().Add(20 * time.Millisecond)
		for x := 0; time.Now().Before(spin); x++ {
			_ = x * x
		}
		if s, err := SampleProc(os.Getpid()); err == nil && s.CPU > was {
			return
		}
	}
}

// fakeProc builds a proc-like directory: each process gets a stat naming
// its parent and 100 + 50 ticks of CPU, a status with 1,000 kB of RSS, and
// fds as its fd directory: that many entries; with fdUnreadable, an fd
// that cannot be read as a directory (a file in its place: reading
// another user's /proc/PID/fd fails too, with EACCES, which the root a
// test may run as would not meet); with fdGone, none (a process that
// exited after its stat was read).
func fakeProc(t *testing.T, procs ...fakeProcess) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(p.pid))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name, content string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("stat", fmt.Sprintf("%d (relay) S %d %d %d 0 -1 4194560 100 0 0 0 100 50 0 0 20 0 9 0", p.pid, p.ppid, p.pid, p.pid))
		write("status", "Name:\trelay\nVmRSS:\t    1000 kB\n")
		switch p.fds {
		case fdUnreadable:
			write("fd", "")
			continue
		case fdGone:
			continue
		}
		if err := os.Mkdir(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range p.fds {
			if err := os.Symlink("/dev/null", filepath.Join(dir, "fd", strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

type fakeProcess struct{ pid, ppid, fds int }

const fdUnreadable, fdGone = -1, -2

// TestSampleProcFDsUnknown: a process tree whose descriptors cannot all be
// counted is still sampled, CPU and RSS whole and FDs unknown (nil); it
// failed the run before (the relay's own fd directory), or counted the
// unreadable child's as none (a child's). What CPU needs, the relay's
// stat, still fails the sample when it is missing.
func TestSampleProcFDsUnknown(t *testing.T) {
	t.Parallel()
	const cpu, rss = 3 * 1500 * time.Millisecond, 3 * 1000 << 10
	for _, tc := range []struct {
		name  string
		procs []fakeProcess
		fds   int // -1: unknown
	}{
		{"all readable", []fakeProcess{{10, 1, 5}, {11, 10, 3}, {12, 11, 2}}, 10},
		{"relay's unreadable", []fakeProcess{{10, 1, fdUnreadable}, {11, 10, 3}, {12, 11, 2}}, -1},
		{"child's unreadable", []fakeProcess{{10, 1, 5}, {11, 10, 3}, {12, 11, fdUnreadable}}, -1},
		{"child gone", []fakeProcess{{10, 1, 5}, {11, 10, 3}, {12, 11, fdGone}}, 8},
	} {
		s, err := sampleProcAt(fakeProc(t, append(tc.procs, fakeProcess{20, 1, 7})...), 10)
		if err != nil {
			t.Errorf("%s: %v; want a sample", tc.name, err)
			continue
		}
		if s.CPU != cpu || s.RSSBytes != rss || s.Procs != 3 {
			t.Errorf("%s: sample %+v; want %v CPU, %d bytes RSS, 3 processes", tc.name, s, cpu, rss)
		}
		switch {
		case tc.fds < 0 && s.FDs != nil:
			t.Errorf("%s: %d fds; want unknown", tc.name, *s.FDs)
		case tc.fds >= 0 && (s.FDs == nil || *s.FDs != tc.fds):
			t.Errorf("%s: fds %v; want %d", tc.name, s.FDs, tc.fds)
		}
	}
	root := fakeProc(t, fakeProcess{10, 1, 5})
	if err := os.Remove(filepath.Join(root, "10", "stat")); err != nil {
		t.Fatal(err)
	}
	if _, err := sampleProcAt(root, 10); err == nil {
		t.Error("the relay's stat missing: sampled; want an error")
	}
}
