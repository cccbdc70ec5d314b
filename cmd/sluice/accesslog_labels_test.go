package main

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// sessionLine waits for the access line of the session whose client is c
// (by its local address) and returns it.
func sessionLine(t *testing.T, log *syncBuffer, c net.Conn) string {
	t.Helper()
	key := "client=" + c.LocalAddr().String() + " "
	var line string
	if !waitFor(10*time.Second, func() bool {
		for l := range strings.Lines(log.String()) {
			if strings.Contains(l, "msg=session") && strings.Contains(l, key) {
				line = l
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no access line for %s; log:\n%s", c.LocalAddr(), log.String())
	}
	return line
}

// labelledSluice starts sluice with its access log in log and serves its
// metrics; it returns sluice's and the metrics' addresses.
func labelledSluice(t *testing.T, log *syncBuffer, args ...string) (addr, maddr string, inst *instance) {
	t.Helper()
	addr, inst = startSluiceLog(t, log, append([]string{"--metrics", "127.0.0.1:0"}, args...)...)
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return addr, maddr, inst
}

// TestLabelsFailAfterSuccess: a CONNECT whose success reply went out
// and whose pipelined bytes then could not reach the target (the target
// reset the connection between the dial and the reply: server.connected
// holds the session there until it has) is logged and counted with the
// reply it got, succeeded, and the error; before, both said reply none
// though the client had read 0x00. On the bare-socket path (relayFd) and
// through package net (serveRequest).
func TestLabelsFailAfterSuccess(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var log syncBuffer
			addr, maddr, inst := labelledSluice(t, &log, flags...)
			reset := func() { // the target accepts and resets: RST is in before the reply
				up, err := l.AcceptTCP()
				if err != nil {
					t.Error(err)
					return
				}
				up.SetLinger(0)
				up.Close()
			}
			inst.srv.connected.Store(&reset)
			c := connectPipelined(t, addr, l.Addr().(*net.TCPAddr), []byte("ahead")) // <- 0x00
			line := sessionLine(t, &log, c)
			if !strings.Contains(line, " reply=succeeded ") || !strings.Contains(line, " err=") {
				t.Errorf("session failed after its success reply, logged as:\n%s", line)
			}
			if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
				t.Fatal("session not ended")
			}
			mfs := scrape(t, maddr)
			ok := value(mfs, "sluice_sessions_total", "command", "connect", "reply", "succeeded")
			none := value(mfs, "sluice_sessions_total", "command", "connect", "reply", "none")
			if ok != 1 || none > 0 {
				t.Errorf("sluice_sessions_total{connect} succeeded %v, none %v; want 1, 0", ok, none)
			}
			if act := value(mfs, "sluice_sessions_active", "command", "connect"); act != 0 {
				t.Errorf("sluice_sessions_active{connect} = %v, want 0", act)
			}
		})
	}
}

// TestLabelsCommand: a session's command is labelled alike in its
// access line and in sluice_sessions_total: none for one that ended before
// its request (the log said cmd=""), and the command itself for a request
// that was read and refused with a reply (address type or command not
// supported), which counted as none; an unknown command code is unknown.
// sluice_sessions_active stays at 0: the refused request never began.
func TestLabelsCommand(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	addr, maddr, inst := labelledSluice(t, &log)
	v4 := handshake.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))
	for _, tc := range []struct {
		name, send, cmd, reply string
		rep                    byte // 0: no reply expected, a close
	}{
		{"handshake", "\x04\x01\x00", "none", "none", 0},
		{"addr-type", "\x05\x01\x00\x05\x01\x00\x07\x00\x00", "connect", "address_type_not_supported", byte(handshake.AddrTypeNotSupported)},
		{"addr-type-udp", "\x05\x01\x00\x05\x03\x00\x07\x00\x00", "udp_associate", "address_type_not_supported", byte(handshake.AddrTypeNotSupported)},
		{"unknown-command", string(handshake.AppendRequest([]byte{5, 1, 0}, 9, v4)), "unknown", "command_not_supported", byte(handshake.CommandNotSupported)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSluice(t, addr)
			mustWrite(t, c, []byte(tc.send))
			if tc.rep != 0 {
				expect(t, c, []byte{5, 0})
				if rep, _ := readReply(t, c); rep != tc.rep {
					t.Fatalf("REP %#02x, want %#02x", rep, tc.rep)
				}
			}
			expectClosed(t, c)
			line := sessionLine(t, &log, c)
			if !strings.Contains(line, " cmd="+tc.cmd+" ") || !strings.Contains(line, " reply="+tc.reply+" ") {
				t.Errorf("access line %s want cmd=%s reply=%s", line, tc.cmd, tc.reply)
			}
			if tc.name == "unknown-command" && !strings.Contains(line, " target=127.0.0.1:9 ") {
				t.Errorf("access line %s: want the refused request's target=127.0.0.1:9", line)
			}
		})
	}
	if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
		t.Fatal("sessions not ended")
	}
	mfs := scrape(t, maddr)
	for _, w := range []struct {
		cmd, reply string
		n          float64 // 0: absent or 0
	}{
		{"none", "none", 1},
		{"connect", "address_type_not_supported", 1},
		{"udp_associate", "address_type_not_supported", 1},
		{"unknown", "command_not_supported", 1},
		{"none", "address_type_not_supported", 0},
		{"none", "command_not_supported", 0},
	} {
		if got := value(mfs, "sluice_sessions_total", "command", w.cmd, "reply", w.reply); max(got, 0) != w.n {
			t.Errorf("sluice_sessions_total{%s,%s} = %v, want %v", w.cmd, w.reply, got, w.n)
		}
	}
	for _, cmd := range []string{"connect", "udp_associate", "none", "unknown"} {
		if got := value(mfs, "sluice_sessions_active", "command", cmd); got != 0 && got != -1 {
			t.Errorf("sluice_sessions_active{%s} = %v, want 0", cmd, got)
		}
	}
}

// TestLabelsAuthRequired: a request refused because a reload made
// authentication mandatory after its greeting was read whole, so it counts
// under its command (connect), not none.
func TestLabelsAuthRequired(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	addr, inst, reload := startReloadable(t, "--handshake-timeout", "0", "--metrics", "127.0.0.1:0")
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := dialSluice(t, addr)
	mustWrite(t, c, []byte{5, 1, 0}) // -> greeting: no auth
	expect(t, c, []byte{5, 0})       // <- no auth, under the old configuration
	reload("--users", writeUsers(t, "alice:a\n"), "--handshake-timeout", "0", "--metrics", "127.0.0.1:0")
	mustWrite(t, c, handshake.AppendRequest(nil, handshake.CmdConnect, handshake.AddrFromAddrPort(target.AddrPort())))
	if rep, _ := readReply(t, c); rep != byte(handshake.GeneralFailure) {
		t.Fatalf("REP %#02x, want 0x01", rep)
	}
	expectClosed(t, c)
	if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
		t.Fatal("session not ended")
	}
	mfs := scrape(t, maddr)
	if got := value(mfs, "sluice_sessions_total", "command", "connect", "reply", "general_failure"); got != 1 {
		t.Errorf("sluice_sessions_total{connect,general_failure} = %v, want 1", got)
	}
	if got := value(mfs, "sluice_sessions_active", "command", "connect"); got != 0 {
		t.Errorf("sluice_sessions_active{connect} = %v, want 0", got)
	}
}

// TestLabelsAuthFailedUser: a failed RFC 1929 login is logged with the
// name it tried (as sshd logs "Failed password for"), so that an operator
// can tell a forgotten password from a guessing run; before, user was empty.
func TestLabelsAuthFailedUser(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	addr, _ := startSluiceLog(t, &log, "--users", writeUsers(t, "alice:a\n"))
	c := dialSluice(t, addr)
	mustWrite(t, c, append([]byte{5, 1, 2}, handshake.AppendUserPass(nil, []byte("mallory"), []byte("guess"))...))
	expect(t, c, []byte{5, 2, 1, 1}) // user/pass chosen; status: failure
	expectClosed(t, c)
	line := sessionLine(t, &log, c)
	if !strings.Contains(line, " user=mallory ") || strings.Contains(line, "guess") {
		t.Errorf("failed login logged as %s; want user=mallory and no password", line)
	}
}
