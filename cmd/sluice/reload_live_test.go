package main

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/proxy"

	"sluice/handshake"
)

// startReloadable is startSluice, with a func that reloads the running
// server with other flags, as SIGHUP reloads with a changed configuration
// file, and fails the test unless the reload took.
func startReloadable(t *testing.T, args ...string) (addr string, inst *instance, reload func(args ...string)) {
	t.Helper()
	full := func(args []string) []string {
		args = withTestFlags(args)
		if !slices.Contains(args, "--listen") {
			args = append(args, "--listen", "127.0.0.1:0")
		}
		return append([]string{"--listeners", "1"}, args...)
	}
	cur, err := parseFlags(full(args), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addr, inst = startSluice(t, args...)
	return addr, inst, func(args ...string) {
		t.Helper()
		next := inst.reload(full(args), cur, nil)
		if next == cur {
			t.Fatalf("reload with %q failed", args)
		}
		cur = next
	}
}

// userPass is an RFC 1929 request.
func userPass(user, pass string) []byte {
	return handshake.AppendUserPass(nil, []byte(user), []byte(pass))
}

// TestReloadRevokesPendingAuth: a client's name and password are checked
// against the users in force when it sends them, not those at its accept.
// Each client here is accepted and has its greeting answered (user/pass)
// before a reload; its credentials, sent after it, get the new file's
// verdict: a removed user or an old password RFC 1929 status 0x01 and a
// close (they used to be let in, for as long as the handshake timeout
// allowed, without end with --handshake-timeout 0), a new password success.
// A reload that turns authentication off after the greeting chose it fails
// the client's authentication: nothing is valid without a users file.
func TestReloadRevokesPendingAuth(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	cases := []struct {
		name      string
		after     string // the users file after the reload; "": no --users
		user, pwd string // sent after the reload
		ok        bool
	}{
		{"user-removed", "bob:b\n", "alice", "old", false},
		{"password-changed", "alice:new\nbob:b\n", "alice", "old", false},
		{"new-password", "alice:new\nbob:b\n", "alice", "new", true},
		{"user-kept", "bob:b\n", "bob", "b", true},
		{"auth-turned-off", "", "alice", "old", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			users := writeUsers(t, "alice:old\nbob:b\n")
			addr, _, reload := startReloadable(t, "--users", users, "--handshake-timeout", "0")
			c := dialSluice(t, addr)
			mustWrite(t, c, []byte{5, 1, 2}) // -> greeting: user/pass only
			expect(t, c, []byte{5, 2})       // <- user/pass, under the old file
			if tc.after == "" {
				reload("--handshake-timeout", "0")
			} else {
				if err := os.WriteFile(users, []byte(tc.after), 0o600); err != nil {
					t.Fatal(err)
				}
				reload("--users", users, "--handshake-timeout", "0")
			}
			mustWrite(t, c, userPass(tc.user, tc.pwd)) // -> credentials, after the reload
			if !tc.ok {
				expect(t, c, []byte{1, 1}) // <- failure
				expectClosed(t, c)
				return
			}
			expect(t, c, []byte{1, 0}) // <- success
			mustWrite(t, c, handshake.AppendRequest(nil, handshake.CmdConnect, handshake.AddrFromAddrPort(target.AddrPort())))
			if rep, _ := readReply(t, c); rep != 0 {
				t.Fatalf("CONNECT after authenticating: REP %#02x, want 0x00", rep)
			}
			mustWrite(t, c, []byte("served"))
			expect(t, c, []byte("served"))
		})
	}
}

// TestReloadAuthOnRefusesPendingNoAuth: a client whose greeting was answered
// with "no authentication" before a reload made authentication mandatory is
// refused when its request comes after it: reply 0x01 and a close, where it
// used to be served without credentials. A client that completed its
// request before the reload keeps its session.
func TestReloadAuthOnRefusesPendingNoAuth(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	addr, _, reload := startReloadable(t, "--handshake-timeout", "0")
	open := connectRaw(t, addr, target)
	c := dialSluice(t, addr)
	mustWrite(t, c, []byte{5, 1, 0}) // -> greeting: no auth
	expect(t, c, []byte{5, 0})       // <- no auth, under the old configuration
	reload("--users", writeUsers(t, "alice:a\n"), "--handshake-timeout", "0")
	mustWrite(t, c, handshake.AppendRequest(nil, handshake.CmdConnect, handshake.AddrFromAddrPort(target.AddrPort())))
	if rep, _ := readReply(t, c); rep != byte(handshake.GeneralFailure) {
		t.Fatalf("request after authentication became mandatory: REP %#02x, want 0x01", rep)
	}
	expectClosed(t, c)
	mustWrite(t, open, []byte("still open"))
	expect(t, open, []byte("still open"))
}

// ipSessions is the limiter's count of ip's sessions.
func ipSessions(l *limiter, ip netip.Addr) int {
	sh := l.shard(ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.n[ip])
}

// userSessions is the limiter's count of user's sessions.
func userSessions(l *limiter, user string) int {
	l.users.mu.Lock()
	defer l.users.mu.Unlock()
	return int(l.users.n[user])
}

// counter reads a Prometheus counter.
func counter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestReloadLimitCountsOpenSessions: a --max-sessions-per-ip or
// --max-sessions-per-user that a reload raises from 0 (no limit) to N
// counts the sessions opened before it, which the limiter used not to
// count while no limit was set: with N open, the next session of that
// client or user is refused as one past the limit, and once one of the N
// ends a new one is admitted.
func TestReloadLimitCountsOpenSessions(t *testing.T) {
	t.Parallel()
	const n = 2
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	t.Run("per-ip", func(t *testing.T) {
		t.Parallel()
		flags := []string{"--metrics", "127.0.0.1:0"}
		addr, inst, reload := startReloadable(t, flags...)
		var open []*net.TCPConn
		for range n {
			open = append(open, connectRaw(t, addr, target))
		}
		reload(append(flags, "--max-sessions-per-ip", "2")...)
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 0})
		expectClosed(t, c) // refused at accept, before its greeting is read
		if got := counter(t, inst.srv.metrics.refused[refMaxPerIP]); got != 1 {
			t.Errorf("refused as max_sessions_per_ip: %v, want 1", got)
		}
		open[0].Close()
		ip := netip.MustParseAddr("127.0.0.1")
		if !waitFor(10*time.Second, func() bool { return ipSessions(inst.srv.limits, ip) == n-1 }) {
			t.Fatalf("%d sessions counted for %v after a close, want %d", ipSessions(inst.srv.limits, ip), ip, n-1)
		}
		c = connectRaw(t, addr, target) // room again
		mustWrite(t, c, []byte("admitted"))
		expect(t, c, []byte("admitted"))
	})
	t.Run("per-user", func(t *testing.T) {
		t.Parallel()
		flags := []string{"--metrics", "127.0.0.1:0", "--users", writeUsers(t, "alice:a\nbob:b\n")}
		addr, inst, reload := startReloadable(t, flags...)
		dial := func(user string) (net.Conn, error) {
			d, _ := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: user, Password: user[:1]}, nil)
			return d.Dial("tcp", target.String())
		}
		var open []net.Conn
		for range n {
			c, err := dial("alice")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			open = append(open, c)
		}
		reload(append(flags, "--max-sessions-per-user", "2")...)
		if c, err := dial("alice"); err == nil {
			c.Close()
			t.Fatalf("session %d of alice accepted past --max-sessions-per-user %d", n+1, n)
		} else if want := "general SOCKS server failure"; !strings.Contains(err.Error(), want) {
			t.Fatalf("session %d of alice: %v, want %q (reply 0x01)", n+1, err, want)
		}
		if got := counter(t, inst.srv.metrics.refused[refMaxPerUser]); got != 1 {
			t.Errorf("refused as max_sessions_per_user: %v, want 1", got)
		}
		bob, err := dial("bob") // another user has its own count
		if err != nil {
			t.Fatalf("bob refused: %v", err)
		}
		bob.Close()
		open[0].Close()
		if !waitFor(10*time.Second, func() bool { return userSessions(inst.srv.limits, "alice") == n-1 }) {
			t.Fatalf("%d sessions counted for alice after a close, want %d", userSessions(inst.srv.limits, "alice"), n-1)
		}
		c, err := dial("alice") // room again
		if err != nil {
			t.Fatalf("alice after one of hers ended: %v", err)
		}
		defer c.Close()
		mustWrite(t, c, []byte("admitted"))
		expect(t, c, []byte("admitted"))
		mustWrite(t, open[1], []byte("still open"))
		expect(t, open[1], []byte("still open"))
	})
}

// TestLiveCredentialsAllocs: a handshake whose credentials are checked
// against the live configuration (liveConfig, as serveConn passes it) does
// not allocate, and a configuration without users validates no one.
func TestLiveCredentialsAllocs(t *testing.T) {
	var lc liveConfig
	lc.Store(&live{hs: handshake.Config{Credentials: handshake.Users{"alice": "s3cret"}}})
	in := append(append([]byte{5, 1, 2}, userPass("alice", "s3cret")...),
		handshake.AppendRequest(nil, handshake.CmdConnect, handshake.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:80")))...)
	var r bytes.Reader
	var conn io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{&r, io.Discard}
	cfg := &handshake.Config{Credentials: &lc, Coalesce: true}
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		r.Reset(in)
		b := handshake.GetBuffer()
		_, err = handshake.Negotiate(conn, b, cfg)
		b.Release()
	})
	if err != nil || allocs != 0 {
		t.Errorf("Negotiate with live credentials: err=%v, %v allocs/op; want nil, 0", err, allocs)
	}
	lc.Store(&live{})
	if lc.Valid([]byte("alice"), []byte("s3cret")) {
		t.Error("valid with no users file in force")
	}
}
