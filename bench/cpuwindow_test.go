package bench

import (
	"context"
	"testing"
	"time"
)

// spinCPU spins until this process has used d more of CPU time.
func spinCPU(d time.Duration) {
	start, _ := selfCPU()
	for {
		if now, _ := selfCPU(); now-start >= d {
			return
		}
	}
}

// TestClientCPUWindow checks that the load generator's own CPU figure
// (client cpu) ends with the load: the relay's closing sample, a scan of
// /proc (a few ms of the load generator's CPU per run, more on a machine
// with many processes), is not the load's work, and the opening one is
// already left out. Here the closing sample burns a second of CPU, far more
// than the 100 ms run can use. Not parallel: it replaces sampleProc.
func TestClientCPUWindow(t *testing.T) {
	if _, ok := selfCPU(); !ok {
		t.Skip("no getrusage here")
	}
	const burn = time.Second
	calls := 0
	sampleProc = func(int) (ProcSample, error) {
		calls++
		if calls%2 == 0 { // the sample after the load
			spinCPU(burn)
		}
		return ProcSample{}, nil
	}
	t.Cleanup(func() { sampleProc = SampleProc })
	ctx := context.Background()
	c := Client{Duration: 100 * time.Millisecond, PID: 1}

	rr, err := RR(ctx, RROptions{Client: c, Target: startTarget(t, Echo, 0), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Conns == 0 || rr.ClientCPU == nil {
		t.Fatalf("rr: %d conns, client cpu %+v", rr.Conns, rr.ClientCPU)
	}
	if rr.ClientCPU.Seconds >= burn.Seconds() {
		t.Errorf("rr client cpu %.3f s over a %.3f s run: it holds the %v the relay's sample after the load took",
			rr.ClientCPU.Seconds, rr.Seconds, burn)
	}

	tp, err := Tput(ctx, TputOptions{Client: c, Dir: Down, Source: startTarget(t, Source, 1), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if tp.Bytes == 0 || tp.ClientCPU == nil {
		t.Fatalf("tput: %d bytes, client cpu %+v", tp.Bytes, tp.ClientCPU)
	}
	if tp.ClientCPU.Seconds >= burn.Seconds() {
		t.Errorf("tput client cpu %.3f s over a %.3f s run: it holds the %v the relay's sample after the load took",
			tp.ClientCPU.Seconds, tp.Seconds, burn)
	}
	t.Logf("client cpu: rr %.3f s in %.3f s, tput %.3f s in %.3f s", rr.ClientCPU.Seconds, rr.Seconds, tp.ClientCPU.Seconds, tp.Seconds)
	if calls != 4 {
		t.Errorf("%d relay samples, want 2 per run", calls)
	}
}
