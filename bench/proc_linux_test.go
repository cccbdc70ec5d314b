package bench

import (
	"os"
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
	if before.RSSBytes <= 0 || before.FDs < 3 || before.Procs < 1 {
		t.Errorf("implausible sample %+v", before)
	}
	if after.CPU <= before.CPU {
		t.Errorf("CPU did not grow: %v then %v", before.CPU, after.CPU)
	}
	if after.FDs < before.FDs+10 {
		t.Errorf("FDs %d then %d; want at least 10 more", before.FDs, after.FDs)
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
