package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"sluice/handshake"
)

// TestDrainEndErr: five sessions are live when a second signal ends the
// drain: a relayed CONNECT, a UDP association, a BIND waiting for its peer,
// a CONNECT whose name lookup is still pending, and a client in its
// greeting. The access lines say how each ended (README, Logs): the
// relayed session and the association with err="context canceled" (the
// association logged no err at all), the others with what the drain
// closed under them; and the pending CONNECT, which no host refused, is
// answered and counted 0x01, not host unreachable (it was, 0x04).
func TestDrainEndErr(t *testing.T) {
	asked := make(chan string, 16)
	r := silentResolver(t, asked)

	args := []string{"--listeners", "1", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--dial-timeout", "60s", "--bind-timeout", "60s"}
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = r
	var log syncBuffer
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	shut := false
	t.Cleanup(func() {
		if !shut {
			inst.shutdown(0)
		}
	})
	addr := inst.addrs()[0]

	echo := echoServer(t, "tcp", "127.0.0.1:0")
	relayed := connectRaw(t, addr, echo.Addr().(*net.TCPAddr))
	mustWrite(t, relayed, []byte("x"))
	expect(t, relayed, []byte("x"))

	udp, _ := associateUDP(t, addr)

	bind, _ := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))

	pending := dialSluice(t, addr)
	mustWrite(t, pending, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdConnect, domainAddr("pending.test", 80)))
	if !waitQuery(asked, "pending", make(chan error, 1)) {
		t.Fatal("no DNS query for pending.test")
	}

	handshaking := dialSluice(t, addr)
	mustWrite(t, handshaking, []byte{5}) // half a greeting
	if !waitFor(10e9, func() bool { return inst.srv.limits.active.Load() == 5 }) {
		t.Fatalf("%d sessions live, want 5", inst.srv.limits.active.Load())
	}

	cut := make(chan os.Signal, 1)
	cut <- syscall.SIGTERM // the second signal: the drain ends at once
	inst.shutdownUnless(60e9, cut)
	shut = true

	for _, tc := range []struct {
		name, want string
		c          net.Conn
	}{
		{"relayed CONNECT", "context canceled", relayed},
		{"UDP ASSOCIATE", "context canceled", udp},
		{"BIND waiting", "use of closed network connection", bind},
		{"CONNECT pending DNS", "lookup pending.test: operation was canceled", pending},
		{"in its handshake", "handshake: greeting: use of closed network connection", handshaking},
	} {
		line := sessionLine(t, &log, tc.c)
		if got := fieldOf(t, "text", line, "err"); !strings.HasSuffix(got, tc.want) {
			t.Errorf("%s: access line err=%q, want it to end %q (README, Logs): %s", tc.name, got, tc.want, strings.TrimSpace(line))
		}
	}
	expect(t, pending, []byte{5, 0})
	if rep, _ := readReply(t, pending); rep != byte(handshake.GeneralFailure) {
		t.Errorf("the CONNECT whose lookup the drain cut short was answered %#02x; want 0x01 general failure", rep)
	}
	if n := counter(t, inst.srv.metrics.sessions[cmdLabelConnect][handshake.HostUnreachable]); n != 0 {
		t.Errorf("sluice_sessions_total{command=\"connect\",reply=\"host_unreachable\"} = %v for a lookup the drain cut short, want 0", n)
	}
}
