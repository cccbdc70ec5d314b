package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// IdleOptions configures an idle-sessions run: open many sessions, each
// proven live by one echo, hold them, then close them all.
type IdleOptions struct {
	Client
	// Target is the echo target's host:port.
	Target string
	// Sessions is how many to open; 0 means 1000.
	Sessions int
	// Hold is how long all sessions stay open; 0 means 2 s. Opening and
	// holding together stop at MaxDuration.
	Hold time.Duration
	// Openers is how many sessions are opened concurrently; 0 means 64.
	Openers int
}

func (o *IdleOptions) sessions() int {
	if o.Sessions > 0 {
		return o.Sessions
	}
	return 1000
}

func (o *IdleOptions) hold() time.Duration {
	if o.Hold > 0 {
		return min(o.Hold, MaxDuration)
	}
	return 2 * time.Second
}

func (o *IdleOptions) openers() int {
	if o.Openers > 0 {
		return o.Openers
	}
	return 64
}

// IdleResult is the outcome of an idle-sessions run.
type IdleResult struct {
	// Mode is "idle".
	Mode string `json:"mode"`
	// Proxy is the relay's address, empty for direct runs.
	Proxy string `json:"proxy,omitempty"`
	// Sessions is how many were asked for; Open how many were opened and held;
	// Alive how many of those still echoed after the hold (each that did not
	// is an error: per-session figures over sessions the relay dropped
	// during the hold would understate their cost).
	Sessions int `json:"sessions"`
	Open     int `json:"open"`
	Alive    int `json:"alive"`
	// OpenSeconds is the time to open them all; HoldSeconds the time held.
	OpenSeconds float64 `json:"open_seconds"`
	HoldSeconds float64 `json:"hold_seconds"`
	// Before and Held are the relay's samples before opening and at the end
	// of the hold, when a PID was given.
	Before *ProcSample `json:"before,omitempty"`
	Held   *ProcSample `json:"held,omitempty"`
	// RSSPerSession and FDsPerSession are (Held - Before) / Open, nil
	// where nothing was measured (no PID, no session open), and
	// FDsPerSession where the relay's descriptors could not be counted
	// (ProcSample.FDs). A measured 0 is written as 0: peers.sh takes a
	// missing figure for no measurement and leaves its run out of the
	// median (an RSS that did not move was left out so, biasing it up).
	RSSPerSession *float64 `json:"rss_bytes_per_session,omitempty"`
	FDsPerSession *float64 `json:"fds_per_session,omitempty"`
	// CPU is the relay's processor time from opening to the end of the hold.
	CPU *CPU `json:"cpu,omitempty"`
	// Errors counts the failures.
	Errors Errors `json:"errors"`
}

// Idle runs the idle-sessions test. The returned error is for unusable
// options or a failed process sample.
func Idle(ctx context.Context, o IdleOptions) (*IdleResult, error) {
	return o.run(ctx, MaxDuration)
}

// run is Idle with opening and holding together cut at limit. Only the end
// of parent (SIGINT) stops the run early, unchecked: sessions held until
// the limit cut the hold are checked as after a full one.
func (o *IdleOptions) run(parent context.Context, limit time.Duration) (*IdleResult, error) {
	d, err := NewDialer(o.Proxy, o.Target)
	if err != nil {
		return nil, err
	}
	smp := sampler{o.PID}
	before, err := smp.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(parent, start.Add(limit))
	defer cancel()
	conns := make([]*net.TCPConn, o.sessions())
	errs := make([]Errors, o.openers())
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go o.openLoop(ctx, &wg, d, conns, &next, &errs[i])
	}
	wg.Wait()
	defer closeAll(conns)
	res := &IdleResult{Mode: "idle", Proxy: o.Proxy.Addr, Sessions: len(conns),
		OpenSeconds: time.Since(start).Seconds()}
	for i := range errs {
		res.Errors.merge(&errs[i])
	}
	for _, c := range conns {
		if c != nil {
			res.Open++
		}
	}
	held := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(o.hold()):
	}
	res.HoldSeconds = time.Since(held).Seconds()
	after, err := smp.sample()
	if err != nil {
		return nil, err
	}
	if o.PID != 0 {
		res.Before, res.Held = &before, &after
		res.CPU = cpuBetween(o.PID, before, after, time.Since(start))
		if res.Open > 0 {
			rss := float64(after.RSSBytes-before.RSSBytes) / float64(res.Open)
			res.RSSPerSession = &rss
			if before.FDs != nil && after.FDs != nil {
				per := float64(*after.FDs-*before.FDs) / float64(res.Open)
				res.FDsPerSession = &per
			}
		}
	}
	if parent.Err() == nil { // a run stopped early is not checked
		res.Alive = o.checkAlive(conns, &res.Errors)
	}
	return res, nil
}

// checkAlive has every held session echo once more, after the sample, and
// returns how many did; the failures go to errs.
func (o *IdleOptions) checkAlive(conns []*net.TCPConn, errs *Errors) int {
	var (
		next  atomic.Int64
		alive atomic.Int64
		mu    sync.Mutex
		wg    sync.WaitGroup
	)
	rr := RROptions{}
	for range o.openers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, echo := []byte{0}, []byte{0}
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				c := conns[i]
				if c == nil {
					continue
				}
				msg[0] = ^sessionByte(i)
				err := c.SetDeadline(time.Now().Add(rr.timeout()))
				if err == nil {
					err = rr.echo(c, msg, echo)
				}
				if err != nil {
					mu.Lock()
					errs.add(fmt.Errorf("bench: idle: a held session: %w", err))
					mu.Unlock()
					continue
				}
				alive.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(alive.Load())
}

// openLoop opens sessions, taking the next free slot each time, until all
// slots are taken or ctx ends.
func (o *IdleOptions) openLoop(ctx context.Context, wg *sync.WaitGroup, d *Dialer, conns []*net.TCPConn, next *atomic.Int64, errs *Errors) {
	defer wg.Done()
	rr := RROptions{}
	msg, echo := []byte{0}, []byte{0}
	for ctx.Err() == nil {
		i := int(next.Add(1) - 1)
		if i >= len(conns) {
			return
		}
		msg[0] = sessionByte(i)
		c, err := openSession(ctx, d, &rr, msg, echo)
		if err != nil {
			if stopped(ctx, err) {
				return
			}
			errs.add(err)
			continue
		}
		conns[i] = c
	}
}

// sessionByte is what session i echoes when it opens; after the hold it
// echoes the byte's complement. Sessions opened one after the other differ,
// so that two opened or checked together and crossed by the relay show up
// as mismatches.
func sessionByte(i int) byte { return byte(i) }

// openSession dials and proves the session with one echo; the caller owns
// the returned conn.
func openSession(ctx context.Context, d *Dialer, rr *RROptions, msg, echo []byte) (*net.TCPConn, error) {
	c, err := d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(time.Now().Add(rr.timeout())); err != nil {
		c.Close()
		return nil, err
	}
	if err := rr.echo(c, msg, echo); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func closeAll(conns []*net.TCPConn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
