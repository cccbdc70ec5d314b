package bench

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// startCrossingEcho serves on 127.0.0.1:0 until the test ends as a relay
// that mixes up its sessions would: it pairs connections in the order it
// accepts them, reads size bytes from each of a pair and sends each its
// partner's (the first straight times its own), then carries on with the
// next size bytes. It returns the address.
func startCrossingEcho(t *testing.T, size, straight int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := ln.Accept()
			if err != nil {
				a.Close()
				return
			}
			mu.Lock()
			conns = append(conns, a, b)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer a.Close()
				defer b.Close()
				ma, mb := make([]byte, size), make([]byte, size)
				for i := 0; ; i++ {
					if _, err := io.ReadFull(a, ma); err != nil {
						return
					}
					if _, err := io.ReadFull(b, mb); err != nil {
						return
					}
					if i >= straight {
						ma, mb = mb, ma
					}
					if _, err := a.Write(ma); err != nil {
						return
					}
					if _, err := b.Write(mb); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRRCrossedConnections: a relay that hands one client the echo meant
// for another is caught. Two workers through a target that swaps the
// echoes of the connections it pairs: each pair holds one connection of
// each worker, at the same count of connections since the start. The
// build before made every message from the low byte of the worker's own
// count alone, so the two messages of a pair were equal and the run
// reported every connection good.
func TestRRCrossedConnections(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 16} {
		target := startCrossingEcho(t, size, 0)
		r, err := RR(context.Background(), RROptions{Client: Client{Duration: shortRun}, Target: target,
			Workers: 2, SizeBytes: size, Timeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Conns != 0 || r.Errors.Data == 0 {
			t.Errorf("size %d: %d connections counted, errors %+v; want none counted, data errors", size, r.Conns, r.Errors)
		}
	}
}

// TestIdleCrossedSessions: the same for idle sessions, crossed when they
// open or only after the hold, which each two sessions opened together
// spend in one pair of the target's. The build before sent the same byte
// on every session (0x5a to open, 0xa5 after the hold), so that it
// reported crossed sessions open and alive.
func TestIdleCrossedSessions(t *testing.T) {
	t.Parallel()
	for straight, want := range []string{"none open", "none alive"} {
		target := startCrossingEcho(t, 1, straight)
		r, err := Idle(context.Background(), IdleOptions{Target: target, Sessions: 2, Openers: 2, Hold: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Alive != 0 || r.Open != 2*straight || r.Errors.Data != 2 {
			t.Errorf("crossed after %d echoes: %d open, %d alive, errors %+v; want %s, 2 data errors",
				straight, r.Open, r.Alive, r.Errors, want)
		}
	}
}
