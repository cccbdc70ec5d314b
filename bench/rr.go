package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// RROptions configures a connection-rate run: each worker loops over
// connect, SOCKS5 handshake (unless direct), one echo, close.
type RROptions struct {
	Client
	// Target is the echo target's host:port, or several separated by
	// commas: worker i then uses target i mod n.
	Target string
	// Sources are local addresses to connect from, worker i from source i
	// mod n; none: the kernel's choice. On loopback a closed connection
	// holds its port in TIME_WAIT for a second before it can be reused
	// towards the same address, so one source and one target cap the rate
	// near half the ephemeral port range per second; each more source (for
	// the connection to the proxy) and target (for the proxy's to the
	// target) adds a set of ports.
	Sources []netip.Addr
	// Workers is the number of concurrent connection loops; 0 means 64.
	Workers int
	// SizeBytes is the size of the echoed message; 0 means 1.
	SizeBytes int
	// Exchanges is the number of echo exchanges per connection, one message
	// in flight at a time; 0 means 1, at most MaxExchanges are made. One is
	// netperf's TCP_CRR (connect, request, response, close); many approach
	// TCP_RR, the per-message cost of a long-lived request/response
	// session. A connection under way when the duration ends makes all of
	// its exchanges; one under way when ctx ends (SIGINT) stops after the
	// exchange under way and is not counted.
	Exchanges int
	// Timeout bounds one exchange, the first one counted from the connect.
	// 0 means 5 s.
	Timeout time.Duration
	// closeConn closes each connection after its exchanges; nil means its
	// Close. Tests slow it down.
	closeConn func(*net.TCPConn) error
}

// MaxExchanges bounds RROptions.Exchanges, and so how far past its duration
// a run can go.
const MaxExchanges = 1_000_000

func (o *RROptions) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return 64
}

func (o *RROptions) size() int { return max(o.SizeBytes, 1) }

func (o *RROptions) exchanges() int { return min(max(o.Exchanges, 1), MaxExchanges) }

func (o *RROptions) close(c *net.TCPConn) error {
	if o.closeConn != nil {
		return o.closeConn(c)
	}
	return c.Close()
}

func (o *RROptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Second
}

// Latency summarises a latency histogram, in microseconds.
type Latency struct {
	// Min, Mean and Max are exact; the percentiles are within 1.6 %.
	Min  float64 `json:"min_us"`
	Mean float64 `json:"mean_us"`
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p99_9_us"`
	Max  float64 `json:"max_us"`
}

// Summarize returns the latency figures of h.
func Summarize(h *Histogram) Latency {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Latency{
		Min: us(h.Min()), Mean: us(h.Mean()), Max: us(h.Max()),
		P50: us(h.Percentile(0.50)), P90: us(h.Percentile(0.90)),
		P99: us(h.Percentile(0.99)), P999: us(h.Percentile(0.999)),
	}
}

// RRResult is the outcome of a connection-rate run.
type RRResult struct {
	// Mode is "rr".
	Mode string `json:"mode"`
	// Proxy is the relay's address, empty for direct runs.
	Proxy string `json:"proxy,omitempty"`
	// Workers and SizeBytes repeat the options.
	Workers   int `json:"workers"`
	SizeBytes int `json:"size_bytes"`
	// Seconds is the wall time until the last worker stopped.
	Seconds float64 `json:"seconds"`
	// Exchanges repeats the option: echo exchanges per connection.
	Exchanges int `json:"exchanges"`
	// Conns is the number of connections whose exchanges all completed
	// and checked out.
	Conns uint64 `json:"conns"`
	// ConnsPerSec is the sum over the workers of each one's connections
	// over its own time, from the start to the end of its last
	// connection: a worker that finished early, and waited while the
	// slowest finished its last connection, does not dilute the rate (over
	// Seconds it did, by up to 2.5 % in runs of 3 s, more with long
	// connections).
	ConnsPerSec float64 `json:"conns_per_sec"`
	// ExchangesPerSec is ConnsPerSec times Exchanges.
	ExchangesPerSec float64 `json:"exchanges_per_sec"`
	// Latency is from the start of the connect to the last echo's last byte.
	Latency Latency `json:"latency"`
	// CPU is the relay's processor time, when a PID was given.
	CPU *CPU `json:"cpu,omitempty"`
	// ClientCPU is the load generator's own processor time (this process).
	ClientCPU *CPU `json:"client_cpu,omitempty"`
	// MachineCPU is the busy time of every CPU over the run (Linux): relay,
	// load generator, targets, anything else running, and the kernel's
	// interrupt work, which no process's figure holds whole.
	MachineCPU *CPU `json:"machine_cpu,omitempty"`
	// Errors counts the failures.
	Errors Errors `json:"errors"`
}

// rrWorker is one worker's private state, merged after the run.
type rrWorker struct {
	hist    Histogram
	errs    Errors
	conns   counter
	stopped time.Time // when its loop returned
}

// RR runs the connection-rate test until the duration ends or ctx ends.
// The returned error is for unusable options or a failed process sample.
func RR(ctx context.Context, o RROptions) (*RRResult, error) {
	targets := strings.Split(o.Target, ",")
	dialers := make([]*Dialer, o.workers())
	for i := range dialers {
		d, err := NewDialer(o.Proxy, targets[i%len(targets)])
		if err != nil {
			return nil, err
		}
		if len(o.Sources) > 0 {
			d = d.From(o.Sources[i%len(o.Sources)])
		}
		dialers[i] = d
	}
	smp := sampler{o.PID}
	before, err := smp.sample()
	if err != nil {
		return nil, err
	}
	workers := make([]rrWorker, len(dialers))
	clock, machine := startCPUClock(selfCPU), startCPUClock(machineCPU)
	start := time.Now()
	end := start.Add(o.duration())
	done := make(chan struct{})
	shown := progress(o.Progress, o.duration(), done, func(el time.Duration) string {
		var n int64
		for i := range workers {
			n += workers[i].conns.n.Load()
		}
		return fmt.Sprintf("rr %4.0fs %10.0f conn/s", el.Seconds(), float64(n)/el.Seconds())
	})
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go o.rrLoop(ctx, &wg, dialers[i], &workers[i], uint64(i), uint64(len(workers)), end)
	}
	wg.Wait()
	elapsed := time.Since(start)
	// The load generator's and the machine's CPU end with the load, before
	// the relay's sample, whose scan of /proc is not the load's work (the
	// sample before the load is outside their window too).
	own, all := clock.stop(elapsed), machine.stop(elapsed)
	close(done)
	<-shown
	after, err := smp.sample()
	if err != nil {
		return nil, err
	}
	res := &RRResult{Mode: "rr", Proxy: o.Proxy.Addr, Workers: len(workers), SizeBytes: o.size(),
		Exchanges: o.exchanges(), Seconds: elapsed.Seconds()}
	var h Histogram
	for i := range workers {
		h.Merge(&workers[i].hist)
		res.Errors.merge(&workers[i].errs)
	}
	res.Conns = h.Count()
	for i := range workers {
		if t := workers[i].stopped.Sub(start).Seconds(); t > 0 {
			res.ConnsPerSec += float64(workers[i].hist.Count()) / t
		}
	}
	res.ExchangesPerSec = res.ConnsPerSec * float64(res.Exchanges)
	res.Latency = Summarize(&h)
	if o.PID != 0 {
		res.CPU = cpuBetween(o.PID, before, after, elapsed)
	}
	res.ClientCPU, res.MachineCPU = own, all
	for _, c := range []*CPU{res.CPU, res.ClientCPU, res.MachineCPU} {
		if c != nil && res.Conns > 0 {
			c.Per1kConns = c.Seconds / (float64(res.Conns) / 1000)
		}
	}
	return res, nil
}

// rrLoop is one worker of n: connections until end or ctx. Worker id's
// connections are numbered id, id+n, id+2n, ..., so that the run's
// connections have different numbers and the ones open together (the
// workers' k-th, give or take a few) differ in their low byte, which a
// message's first byte carries (and every eighth after it; the others
// carry the number's higher bytes): a connection crossed with another
// shows up as a mismatch, even with 1-byte messages.
func (o *RROptions) rrLoop(ctx context.Context, wg *sync.WaitGroup, d *Dialer, w *rrWorker, id, n uint64, end time.Time) {
	defer wg.Done()
	defer func() { w.stopped = time.Now() }()
	msg, echo := make([]byte, o.size()), make([]byte, o.size())
	// Invariant: each pass opens and closes one connection.
	for seq := id; ctx.Err() == nil && time.Now().Before(end); seq += n {
		lat, err := o.exchange(ctx, d, seq, msg, echo)
		if err != nil {
			if stopped(ctx, err) {
				return
			}
			w.errs.add(err)
			continue
		}
		w.hist.Record(lat)
		w.conns.n.Add(1)
	}
}

// stopped reports whether err is ctx's end cutting an operation short, a
// connect under way when SIGINT stops a run: the run's end, not a failure
// of the relay, so not counted (a run stopped early still reports what it
// did, and exits 0 if nothing else failed).
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// exchange opens one connection, echoes its messages through it (in msg,
// each made from seq and its number) and closes it. It returns the time
// from the start of the connect to the last echo's last byte, the close
// left out. When ctx ends it makes no more exchanges and returns ctx's
// error.
func (o *RROptions) exchange(ctx context.Context, d *Dialer, seq uint64, msg, echo []byte) (time.Duration, error) {
	start := time.Now()
	c, err := d.Dial(ctx)
	if err != nil {
		return 0, err
	}
	defer o.close(c)
	t0 := start // the first exchange's timeout counts from the connect
	for k := range o.exchanges() {
		if k > 0 {
			if err := ctx.Err(); err != nil {
				return 0, err // stopped early: the connection is not counted
			}
			t0 = time.Now()
		}
		if err := c.SetDeadline(t0.Add(o.timeout())); err != nil {
			return 0, err
		}
		for i := range msg {
			msg[i] = byte(seq>>(8*(i%8)) + uint64(i) + uint64(k)*131)
		}
		if err := o.echo(c, msg, echo); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// echo sends msg on c and checks that it comes back.
func (o *RROptions) echo(c *net.TCPConn, msg, echo []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("bench: rr: %w", err)
	}
	if _, err := io.ReadFull(c, echo); err != nil {
		return fmt.Errorf("bench: rr: reading the echo: %w", err)
	}
	if !bytes.Equal(msg, echo) {
		return fmt.Errorf("%w: rr: echo differs from the message", ErrMismatch)
	}
	return nil
}
