package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"sluice/handshake"
)

// TestNetClientLeavesPendingDial: with --net-sockets as with bare sockets
// (TestClientLeavesPendingDial), a client that leaves while its CONNECT's
// dial is pending (its target's SYNs dropped) ends the dial and its session
// then, or from a second into the dial when it left before, not at the dial timeout (a minute here): closing
// or resetting, to an address or to a name. Its one place under
// --max-sessions 1 is given back (the next client's CONNECT goes through),
// and its access line and sluice_sessions_total say it left, as the bare
// path's do: reply none, errClientGone. With --net-sockets the session used
// to hold its place, and its goroutine and sockets, for the whole minute.
// Not parallel: it counts the whole process.
func TestNetClientLeavesPendingDial(t *testing.T) {
	leavePendingDials(t, new(syncBuffer), "--net-sockets")
}

// leavePendingDials runs leavePendingDial's cases (closing or resetting, to
// an address or to a name) on two servers started with args, which log to
// log: one that watches a client from its dial's start, and one from a
// second into it (defaultWatchAfter), as by default. It returns the first's
// address.
func leavePendingDials(t *testing.T, log *syncBuffer, args ...string) string {
	resolver := fixedResolver(t, netip.MustParseAddr("127.0.0.1"))
	echo := startEcho(t)
	args = append([]string{"--dial-timeout", "60s", "--max-sessions", "1", "--metrics", "127.0.0.1:0"}, args...)
	atAddr, at := startSluiceConfig(t, func(cfg *config) { cfg.resolver, cfg.watchAfter = resolver, -1 }, log, args...)
	_, after := startSluiceResolver(t, resolver, log, args...)
	for _, tc := range []struct {
		name        string
		inst        *instance
		domain, rst bool
	}{
		{"close", at, false, false}, {"reset", at, false, true}, {"name-close", at, true, false}, {"name-reset", at, true, true},
		{"close-after", after, false, false}, {"name-reset-after", after, true, true},
	} {
		// Before the baseline, and open to the test's end: a target
		// closed would refuse an earlier subtest's dial, and a session
		// left behind there would end within this one's count.
		target := fullListener(t)
		t.Run(tc.name, func(t *testing.T) {
			noLeak(t, func(t *testing.T) {
				leavePendingDial(t, tc.inst, log, target, echo, tc.domain, tc.rst)
			})
		})
	}
	return atAddr
}

// leavePendingDial has a client of inst leave during its CONNECT's pending
// dial to target and checks that its session ends, is logged and counted
// as a client gone, and gives its place to the next client, a CONNECT to
// echo.
func leavePendingDial(t *testing.T, inst *instance, log *syncBuffer, target, echo netip.AddrPort, domain, rst bool) {
	srv := inst.srv
	addr := inst.addrs()[0]
	none := sessionsCounted(t, srv, replyNone)
	c := dialSluice(t, addr)
	req := connectReq(target)
	if domain {
		req = handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdConnect, domainAddr("pending.test", int(target.Port())))
	}
	mustWrite(t, c, req)
	synSent(t, target)
	if rst {
		c.SetLinger(0)
	}
	c.Close()
	// The dial timeout is a minute: a session that ends within 20 s ended
	// for its client's leaving.
	if !waitFor(20*time.Second, func() bool { return srv.limits.active.Load() == 0 }) {
		t.Fatal("the session still holds its place under --max-sessions 20 s after its client left")
	}
	line := sessionLine(t, log, c)
	if !strings.Contains(line, " cmd=connect ") || !strings.Contains(line, " reply=none ") || !strings.Contains(line, errClientGone.Error()) {
		t.Errorf("access line %q; want cmd=connect, reply=none and %q", line, errClientGone)
	}
	if !waitFor(10*time.Second, func() bool { return sessionsCounted(t, srv, replyNone) == none+1 }) {
		t.Errorf("sluice_sessions_total{connect,none} %v; want %v", sessionsCounted(t, srv, replyNone), none+1)
	}
	if n := sessionsCounted(t, srv, int(handshake.TTLExpired)); n != 0 {
		t.Errorf("sluice_sessions_total{connect,ttl_expired} %v; want 0", n)
	}
	// The one place is free: the next client's CONNECT goes through.
	next, rep := request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(echo))
	if rep != 0 {
		t.Fatalf("the next client's CONNECT: REP %#02x; want success", rep)
	}
	mustWrite(t, next, []byte("n"))
	expect(t, next, []byte("n"))
	next.Close()
	if !waitFor(10*time.Second, func() bool { return srv.limits.active.Load() == 0 }) {
		t.Fatal("the next client's session did not end")
	}
}

// sessionsCounted is sluice_sessions_total{command="connect",reply=rep}.
func sessionsCounted(t *testing.T, srv *server, rep int) float64 {
	t.Helper()
	var m dto.Metric
	if err := srv.metrics.sessions[cmdLabelConnect][rep].Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestNetClientHalfClosesPendingDial: with --net-sockets, a client that
// half-closes after bytes for its target (pipelined with the request, or
// sent during the dial) is not leaving, as with bare sockets: its dial goes
// on and the bytes and its FIN reach the target once it accepts.
func TestNetClientHalfClosesPendingDial(t *testing.T) {
	addr, _ := startSluiceConfig(t, func(cfg *config) { cfg.watchAfter = -1 }, new(syncBuffer), "--net-sockets", "--dial-timeout", "60s")
	for _, how := range halfCloses {
		t.Run(how, func(t *testing.T) {
			halfCloseWithData(t, addr, how)
		})
	}
}

// TestNetWatchEndsWithDial: the waiter registers a --net-sockets client's
// socket (package net's, which the runtime poller holds too) in its epoll
// set while the client's dial is pending, and takes it out once the dial
// ended, before the session goes on to the relay: a registration left
// behind would outlive the session where the relay holds a duplicate of the
// socket, and its wake-ups would cost the waiter. The relay then works.
func TestNetWatchEndsWithDial(t *testing.T) {
	addr, inst := startSluiceConfig(t, func(cfg *config) { cfg.watchAfter = -1 }, new(syncBuffer), "--net-sockets", "--dial-timeout", "60s")
	w := inst.srv.waiter
	if w == nil {
		t.Fatal("no waiter with --net-sockets")
	}
	lfd, target := fullListenerFd(t)
	c := dialSluice(t, addr)
	mustWrite(t, c, connectReq(target))
	synSent(t, target)
	// The client's socket is in the waiter's set.
	if !waitFor(10*time.Second, func() bool { return len(epollTargets(t, w.epfd)) == 1 }) {
		t.Fatalf("the waiter's epoll set holds %v during the pending dial; want the client's socket", epollTargets(t, w.epfd))
	}
	// Room for the retransmitted SYN, then the target accepts it.
	up := acceptRetried(t, lfd)
	defer up.Close()
	expect(t, c, []byte{5, 0})
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("REP = %#02x; want success", rep)
	}
	// Relayed now, its client open: out of the waiter's set.
	if got := epollTargets(t, w.epfd); len(got) != 0 {
		t.Errorf("the waiter's epoll set holds %v once the dial ended; want nothing", got)
	}
	up.SetDeadline(time.Now().Add(10 * time.Second))
	mustWrite(t, c, []byte("up"))
	expect(t, up, []byte("up"))
	mustWrite(t, up, []byte("down"))
	expect(t, c, []byte("down"))
}

// epollTargets lists the descriptors registered with epoll descriptor epfd
// of this process (its fdinfo's tfd lines).
func epollTargets(t *testing.T, epfd int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "tfd:" {
			fd, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("fdinfo line %q", l)
			}
			fds = append(fds, fd)
		}
	}
	return fds
}

// TestNetDialTimeoutWatched: with --net-sockets, a watched dial (the
// context its client's leaving would cancel is the dial timeout's, made by
// dialWatched instead of net.Dialer) still ends at the dial timeout with
// 0x06 TTL expired when the client stays, to an address and to a name.
func TestNetDialTimeoutWatched(t *testing.T) {
	resolver := fixedResolver(t, netip.MustParseAddr("127.0.0.1"))
	addr, _ := startSluiceConfig(t, func(cfg *config) { cfg.resolver, cfg.watchAfter = resolver, -1 }, new(syncBuffer), "--net-sockets", "--dial-timeout", "300ms")
	target := fullListener(t)
	for _, dst := range []handshake.Addr{handshake.AddrFromAddrPort(target), domainAddr("pending.test", int(target.Port()))} {
		t.Run(dst.String(), func(t *testing.T) {
			c, rep := request(t, addr, handshake.CmdConnect, dst)
			if rep != byte(handshake.TTLExpired) {
				t.Fatalf("REP = %#02x; want 0x06 TTL expired", rep)
			}
			expectEnd(t, c, 10*time.Second)
		})
	}
}
