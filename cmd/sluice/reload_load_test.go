package main

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestReloadUnderLoad: reloads that turn the limits on and off and
// swap the users file while clients come and go change nothing for the
// sessions that end: once every client has gone, the limiter counts no
// session, no client IP and no user (none lost, none negative), and a
// client is served under the last configuration.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	users := writeUsers(t, "alice:a\nbob:b\n")
	addr, inst, reload := startReloadable(t, "--users", users)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, user := range []string{"alice", "bob", "alice", "bob"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Refusals are expected while a limit is low: only
				// the counts afterwards matter.
				serveOneEcho(addr, echo, user, user[:1], 5*time.Second)
			}
		}()
	}
	for i := range 40 {
		args := []string{"--users", users}
		if i%2 == 0 {
			args = append(args, "--max-sessions", "3", "--max-sessions-per-ip", "2", "--max-sessions-per-user", "1")
		}
		reload(args...)
	}
	close(stop)
	wg.Wait()
	l := inst.srv.limits
	ip := netip.MustParseAddr("127.0.0.1")
	if !waitFor(10*time.Second, func() bool {
		return l.active.Load() == 0 && ipSessions(l, ip) == 0 && userSessions(l, "alice") == 0 && userSessions(l, "bob") == 0
	}) {
		t.Fatalf("with no client left: active %d, %v %d, alice %d, bob %d; want 0", l.active.Load(), ip, ipSessions(l, ip), userSessions(l, "alice"), userSessions(l, "bob"))
	}
	if err := serveOneEcho(addr, echo, "alice", "a", 5*time.Second); err != nil {
		t.Fatalf("a client after the reloads: %v", err)
	}
}
