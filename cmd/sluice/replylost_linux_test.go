package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// TestFailureReplyLostCountsNone: the reply counted and logged is the one
// sent (README, Logs and Metrics), so a failure reply whose write failed,
// its client gone, is reply=none, as a success reply lost that way is
// (TestUDPReplyLostCountsNone). Here each client resets once its CONNECT's
// dial to a target whose SYNs are dropped is under way, and the dial ends
// at --dial-timeout, 2 s later, with the waiter's watch of the client put
// off past it: the 0x06 it is owed cannot be written. Every such session
// was counted and logged ttl_expired.
func TestFailureReplyLostCountsNone(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{"bare sockets": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var log syncBuffer
			addr, inst := startSluiceConfig(t, func(cfg *config) { cfg.resolver, cfg.watchAfter = nxdomainResolver(t), time.Hour }, &log,
				append([]string{"--dial-timeout", "2s", "--metrics", "127.0.0.1:0"}, flags...)...)
			const n = 3
			var clients []*net.TCPConn
			for range n {
				target := fullListener(t) // one each: synSent sees this dial's SYN
				c := dialSluice(t, addr)
				mustWrite(t, c, connectReq(target))
				synSent(t, target) // the dial is under way: the request is in
				c.SetLinger(0)
				c.Close() // a reset, long before the dial timeout
				clients = append(clients, c)
			}
			for _, c := range clients {
				if line := sessionLine(t, &log, c); !strings.Contains(line, " reply=none ") {
					t.Errorf("access line %q; want reply=none: the failure reply was never written", line)
				}
			}
			if got := sessionsCounted(t, inst.srv, int(handshake.TTLExpired)); got != 0 {
				t.Errorf("sluice_sessions_total{connect,ttl_expired} = %v; want 0: no 0x06 was written", got)
			}
			if got := sessionsCounted(t, inst.srv, replyNone); got != n {
				t.Errorf("sluice_sessions_total{connect,none} = %v; want %d", got, n)
			}
		})
	}
}
