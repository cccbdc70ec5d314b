package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSessionAllocations counts the heap allocations a CONNECT session costs
// the real command, from accept to the relay's end of it, in a process of
// its own (the test's clients allocate in this one): the runtime's Mallocs
// counter, read through --debug-addr before and after sessions of a
// pipelining client (greeting, request and a byte in one write, as
// sluice-bench rr sends them). With the bare sockets and event loops of the
// default, the session's one allocation is its client struct, which holds
// the session and the relay's state for it; an access log line adds the
// strings it writes and slog's attributes past the five a record keeps
// inline.
func TestSessionAllocations(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		flags []string
		max   float64 // per session
	}{
		// 15.0 and 17.0 before the session's state shared one allocation and
		// accept, connect and getsockname read and wrote addresses in place.
		{"no-log", []string{"--access-log=false"}, 1.5},
		// Small reads copied: the buffers come from a pool and go back.
		{"no-log-copy-below", []string{"--access-log=false", "--copy-below", "16K"}, 1.5},
		// 4.1 before its lines stopped allocating (accessLine).
		{"access-log", nil, 1.5},
		// Package net's client and upstream sockets and the relay's
		// goroutines. The waiter's watch of every dial costs one that
		// ends before it is registered (as these to a loopback echo) a
		// map entry and a deadline, and no allocation: the context it
		// cancels is the dial timeout's, which net.Dialer then does not
		// make. 49.0, with or without the access log, before the waiter
		// watched these dials and since.
		{"net-sockets-no-log", []string{"--net-sockets", "--access-log=false"}, 49.5},
		{"net-sockets-access-log", []string{"--net-sockets"}, 49.5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--listeners", "1", "--debug-addr", "127.0.0.1:0"}, tc.flags...)
			p := spawnSluice(t, nil, args...)
			line, ok := p.waitLine("debug server listening", 30*time.Second)
			if !ok {
				t.Fatalf("no debug server line; log:\n%s", p.log())
			}
			debug := lineAddr(line)
			target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr).AddrPort()
			req := []byte{5, 1, 0, 5, 1, 0, 1, 0, 0, 0, 0, byte(target.Port() >> 8), byte(target.Port()), 'x'}
			copy(req[7:11], target.Addr().AsSlice())
			sessions(t, p.addr, req, 200, 4) // warm: pools, loops' lists, the poller's
			a := mallocs(t, debug)
			b := mallocs(t, debug)
			const n = 2000
			sessions(t, p.addr, req, n, 4)
			c := mallocs(t, debug)
			per := float64(c-b-(b-a)) / n // less one reading's own
			t.Logf("%.2f allocations per session (Mallocs %d, %d, %d)", per, a, b, c)
			limit := tc.max
			if raceEnabled {
				limit *= 2 // pooled buffers dropped now and then
			}
			if per > limit {
				t.Errorf("%.2f allocations per session; want at most %.1f", per, limit)
			}
		})
	}
}

// sessions runs n CONNECT sessions through addr, conc at a time: each sends
// req (greeting, request and one byte), reads the two replies and the
// byte's echo, and closes.
func sessions(t *testing.T, addr string, req []byte, n, conc int) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan struct{}, n)
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := session(addr, req); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d sessions failed, first: %v", len(errs), errs[0])
	}
}

func session(addr string, req []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
	if _, err := c.Write(req); err != nil {
		return err
	}
	var rep [2 + 10 + 1]byte // method, CONNECT reply (IPv4), the echo
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return err
	}
	if rep[0] != 5 || rep[1] != 0 || rep[3] != 0 || rep[12] != 'x' {
		return fmt.Errorf("replies and echo %x", rep)
	}
	return nil
}

// mallocs reads the runtime's count of heap allocations from the debug
// server's allocs profile (its "# Mallocs = N" line).
func mallocs(t *testing.T, debug string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + debug + "/debug/pprof/allocs?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# Mallocs = "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no Mallocs line in the allocs profile (%v)", sc.Err())
	return 0
}
