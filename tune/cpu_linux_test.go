package tune

import (
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUs(t *testing.T) {
	t.Parallel()
	cpus, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) != runtime.NumCPU() || !slices.IsSorted(cpus) {
		t.Errorf("CPUs() = %v; want %d sorted CPUs (runtime.NumCPU)", cpus, runtime.NumCPU())
	}
}

func TestPinThread(t *testing.T) {
	t.Parallel()
	cpus, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	cpu := cpus[0] // CPU 0 unless the process may not run there
	got := make(chan []int, 2)
	go pinAndReport(t, cpu, got)
	if set := <-got; !slices.Equal(set, []int{cpu}) {
		t.Errorf("thread affinity after PinThread(%d) = %v", cpu, set)
	}
	if all := <-got; !slices.Equal(all, cpus) {
		t.Errorf("CPUs() on the pinned thread = %v, want %v", all, cpus)
	}
	if err := PinThread(-1); err == nil {
		t.Error("PinThread(-1) succeeded")
	}
}

// pinAndReport pins its own thread to cpu, then sends the thread's affinity
// and what CPUs returns there.
// Returning while locked ends the thread, so no pinned thread is reused.
func pinAndReport(t *testing.T, cpu int, got chan<- []int) {
	defer close(got)
	if err := PinThread(cpu); err != nil {
		t.Errorf("PinThread(%d): %v", cpu, err)
		return
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Errorf("sched_getaffinity: %v", err)
		return
	}
	var cpus []int
	for c := range cpuSetSize {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	got <- cpus
	all, err := CPUs()
	if err != nil {
		t.Errorf("CPUs: %v", err)
	}
	got <- all
}
