package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// MaxDuration caps every client run, whatever its options ask for.
const MaxDuration = 10 * time.Minute

// Client holds the options every client run shares.
type Client struct {
	// Proxy is the relay under test; its zero value connects directly.
	Proxy Proxy
	// Duration is how long the load runs; 0 means 5 s, and it is capped at MaxDuration.
	Duration time.Duration
	// PID, when not 0, is the relay's process: its CPU time (and, for idle
	// runs, memory and descriptors) is sampled before and after the load.
	PID int
	// Progress, when not nil, receives a line per second for runs longer than 3 s.
	Progress io.Writer
}

func (c *Client) duration() time.Duration {
	switch {
	case c.Duration <= 0:
		return 5 * time.Second
	case c.Duration > MaxDuration:
		return MaxDuration
	}
	return c.Duration
}

// CPU is a process's processor time over a run: the relay's, or the load
// generator's own.
type CPU struct {
	// PID is the process sampled (with its descendants); absent for the
	// load generator's own figure.
	PID int `json:"pid,omitempty"`
	// Seconds is user plus system time spent during the load.
	Seconds float64 `json:"seconds"`
	// Cores is Seconds divided by the run's wall time.
	Cores float64 `json:"cores"`
	// PerGiB is Seconds per GiB relayed, for throughput runs.
	PerGiB float64 `json:"per_gib,omitempty"`
	// Per1kConns is Seconds per 1,000 connections, for rr runs.
	Per1kConns float64 `json:"per_1k_conns,omitempty"`
}

// cpuBetween returns the CPU use between two samples over elapsed wall time.
func cpuBetween(pid int, before, after ProcSample, elapsed time.Duration) *CPU {
	s := (after.CPU - before.CPU).Seconds()
	u := &CPU{PID: pid, Seconds: s}
	if elapsed > 0 {
		u.Cores = s / elapsed.Seconds()
	}
	return u
}

// sampler samples the relay's process when a PID is set; sampling errors
// end the run, since a report without the asked-for figures misleads.
type sampler struct{ pid int }

// sampleProc is SampleProc; tests replace it.
var sampleProc = SampleProc

func (s sampler) sample() (ProcSample, error) {
	if s.pid == 0 {
		return ProcSample{}, nil
	}
	return sampleProc(s.pid)
}

// cpuClock measures processor time over a run from one reading: selfCPU,
// the load generator's own (where it shares the cores with the relay and
// the targets, what it spends is not the relay's to spend, and a workload
// that costs the client more, a SOCKS handshake against none, leaves the
// relay less), or machineCPU, every process's and the kernel's together
// (on loopback the receiving socket's TCP work runs in the context of
// whichever process's send or release of the socket meets it, so the
// relay's own figure moves with what its neighbours happen to be doing,
// where the machine's holds all of it).
type cpuClock struct {
	read  func() (time.Duration, bool)
	start time.Duration
	ok    bool
}

func startCPUClock(read func() (time.Duration, bool)) cpuClock {
	t, ok := read()
	return cpuClock{read, t, ok}
}

// stop returns the time used since start, or nil where it cannot be read.
func (c cpuClock) stop(elapsed time.Duration) *CPU {
	t, ok := c.read()
	if !c.ok || !ok {
		return nil
	}
	return cpuBetween(0, ProcSample{CPU: c.start}, ProcSample{CPU: t}, elapsed)
}

// counter is a per-worker atomic count padded to its own cache line.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

// watch sets a past deadline on c as soon as ctx ends. The returned func
// stops watching and, if the deadline is being set, waits until it is, so
// the caller may then set deadlines of its own.
func watch(ctx context.Context, c *net.TCPConn) (release func()) {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.SetDeadline(aLongTimeAgo)
		close(done)
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// isTimeout reports whether err is a deadline expiry, the normal end of a
// timed loop.
func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// progress prints line() every second to w until done is closed, for runs
// longer than 3 s. Its caller waits for it through the returned channel.
func progress(w io.Writer, d time.Duration, done <-chan struct{}, line func(elapsed time.Duration) string) <-chan struct{} {
	finished := make(chan struct{})
	if w == nil || d <= 3*time.Second {
		close(finished)
		return finished
	}
	go progressLoop(w, done, finished, line)
	return finished
}

// progressLoop is progress's goroutine.
func progressLoop(w io.Writer, done <-chan struct{}, finished chan<- struct{}, line func(time.Duration) string) {
	defer close(finished)
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			fmt.Fprintln(w, line(time.Since(start)))
		}
	}
}

// gbps converts bytes over elapsed time to Gbit/s.
func gbps(bytes int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(bytes) * 8 / elapsed.Seconds() / 1e9
}
