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
	// Burn some CPU and open descriptors, then both must show.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
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
