package main

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"sluice/handshake"
)

// TestReloadSlotsEveryPath: every way a session can end gives back
// its --max-sessions, per-IP and per-user slots, on each accept and relay
// path: afterwards the limiter counts nothing and no count went negative.
func TestReloadSlotsEveryPath(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	p := closedPort(t) // held: no other socket gets the port meanwhile
	refused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p[0])<<8|uint16(p[1]))
	for _, mode := range [][]string{nil, {"--net-sockets"}, {"--loops", "-1"}} {
		t.Run(func() string {
			if mode == nil {
				return "default"
			}
			return mode[0] + mode[len(mode)-1]
		}(), func(t *testing.T) {
			t.Parallel()
			users := writeUsers(t, "alice:a\n")
			args := append([]string{"--users", users, "--max-sessions", "50", "--max-sessions-per-ip", "50", "--max-sessions-per-user", "1", "--handshake-timeout", "1s", "--bind-timeout", "2s"}, mode...)
			addr, inst := startSluice(t, args...)
			auth := append([]byte{5, 1, 2}, userPass("alice", "a")...)
			authOK := []byte{5, 2, 1, 0}
			req := func(cmd handshake.Command, ap netip.AddrPort) []byte {
				return handshake.AppendRequest(append([]byte(nil), auth...), cmd, handshake.AddrFromAddrPort(ap))
			}
			// A session that ends without a failure reply gives its
			// slots back after the client saw its end: wait for
			// alice's before she comes back.
			settle := func(after string) {
				t.Helper()
				if !waitFor(10*time.Second, func() bool { return userSessions(inst.srv.limits, "alice") == 0 }) {
					t.Fatalf("alice's slot not given back after %s", after)
				}
			}
			// 1: closes before a byte.
			dialSluice(t, addr).Close()
			// 2: wrong password.
			c := dialSluice(t, addr)
			mustWrite(t, c, append([]byte{5, 1, 2}, userPass("alice", "x")...))
			expect(t, c, []byte{5, 2, 1, 1})
			expectClosed(t, c)
			// 3: handshake timeout.
			c = dialSluice(t, addr)
			mustWrite(t, c, []byte{5, 1, 2})
			expect(t, c, []byte{5, 2})
			expectClosed(t, c)
			// 4: connection refused.
			c = dialSluice(t, addr)
			mustWrite(t, c, req(handshake.CmdConnect, refused))
			expect(t, c, authOK)
			if rep, _ := readReply(t, c); rep != 5 {
				t.Fatalf("CONNECT to a closed port: REP %#02x", rep)
			}
			c.Close()
			settle("a refused dial")
			// 5: relayed, then a second of alice refused while it runs.
			c = dialSluice(t, addr)
			mustWrite(t, c, req(handshake.CmdConnect, echo.AddrPort()))
			expect(t, c, authOK)
			if rep, _ := readReply(t, c); rep != 0 {
				t.Fatalf("CONNECT: REP %#02x", rep)
			}
			mustWrite(t, c, []byte("x"))
			expect(t, c, []byte("x"))
			d := dialSluice(t, addr)
			mustWrite(t, d, req(handshake.CmdConnect, echo.AddrPort()))
			expect(t, d, authOK)
			if rep, _ := readReply(t, d); rep != 1 {
				t.Fatalf("second session of alice: REP %#02x, want 0x01", rep)
			}
			d.Close()
			c.Close()
			settle("a relayed session")
			// A request answered with rep, then the client leaves.
			answered := func(what string, cmd handshake.Command, ap netip.AddrPort, rep byte) {
				t.Helper()
				c := dialSluice(t, addr)
				mustWrite(t, c, req(cmd, ap))
				expect(t, c, authOK)
				if got, _ := readReply(t, c); got != rep {
					t.Fatalf("%s: REP %#02x, want %#02x", what, got, rep)
				}
				c.Close()
			}
			// 6: unknown command.
			answered("command 9", 9, echo.AddrPort(), 7)
			settle("an unknown command")
			// 7: BIND left while waiting.
			answered("BIND", handshake.CmdBind, netip.MustParseAddrPort("127.0.0.1:0"), 0)
			settle("a BIND")
			// 8: UDP ASSOCIATE, control connection closed.
			answered("UDP ASSOCIATE", handshake.CmdUDPAssociate, netip.MustParseAddrPort("0.0.0.0:0"), 0)

			l := inst.srv.limits
			ip := netip.MustParseAddr("127.0.0.1")
			if !waitFor(10*time.Second, func() bool {
				return l.active.Load() == 0 && ipSessions(l, ip) == 0 && userSessions(l, "alice") == 0
			}) {
				t.Fatalf("after every session ended: active %d, ip %d, alice %d; want 0", l.active.Load(), ipSessions(l, ip), userSessions(l, "alice"))
			}
			l.users.mu.Lock()
			nu := len(l.users.n)
			l.users.mu.Unlock()
			sh := l.shard(ip)
			sh.mu.Lock()
			ni := len(sh.n)
			sh.mu.Unlock()
			if nu != 0 || ni != 0 {
				t.Fatalf("entries left: users %d, ips %d", nu, ni)
			}
		})
	}
}
