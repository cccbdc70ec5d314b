package main

import (
	"net"
	"testing"
	"time"
)

// TestSessionAllocationsNetSockets is TestSessionAllocations with
// --net-sockets: package net's client and upstream sockets and the relay's
// goroutines, and the waiter's watch of every dial, which costs a dial that
// ends before it is registered (as these to a loopback echo) a map entry and
// a deadline, and no allocation: the context it cancels is the dial
// timeout's, which net.Dialer no longer makes. 49.0 per session, with or
// without the access log, before the waiter watched these dials and since.
func TestSessionAllocationsNetSockets(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		flags []string
		max   float64 // per session
	}{
		{"no-log", []string{"--net-sockets", "--access-log=false"}, 49.5},
		{"access-log", []string{"--net-sockets"}, 49.5},
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
			sessions(t, p.addr, req, 200, 4) // warm
			a := mallocs(t, debug)
			b := mallocs(t, debug)
			const n = 2000
			sessions(t, p.addr, req, n, 4)
			c := mallocs(t, debug)
			per := float64(c-b-(b-a)) / n // less one reading's own
			t.Logf("%.2f allocations per session (Mallocs %d, %d, %d)", per, a, b, c)
			limit := tc.max
			if raceEnabled {
				limit *= 2
			}
			if per > limit {
				t.Errorf("%.2f allocations per session; want at most %.1f", per, limit)
			}
		})
	}
}
