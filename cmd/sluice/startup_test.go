package main

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/handshake"
)

// TestStartupBusyHTTPPort: a --metrics or --debug-addr port in use stops
// sluice with exit 1 and one line naming the flag, before it listens for
// SOCKS. Those servers used to start after the SOCKS listeners, so the
// error came after the "sluice listening" lines (and, under systemd's
// Type=notify, nowhere before READY=1 could say so).
func TestStartupBusyHTTPPort(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0") // without SO_REUSEPORT: nothing binds beside it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // after the parallel subtests
	addr := busy.Addr().String()
	for _, flag := range []string{"--metrics", "--debug-addr"} {
		t.Run(flag, func(t *testing.T) {
			t.Parallel()
			code, out, err := runExit(30*time.Second, flag, addr, "--listen", "127.0.0.1:0", "--listeners", "1")
			if code != 1 || strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "sluice: "+flag) || !strings.Contains(out, "address already in use") {
				t.Fatalf("sluice %s %s (in use): exit %d (%v), stderr:\n%s\nwant exit 1 and one line naming %s", flag, addr, code, err, out, flag)
			}
		})
	}
}

// TestKeepAliveBounds: a keepalive time or count past what Linux takes
// (TCP_KEEPIDLE and TCP_KEEPINTVL 32767 s, TCP_KEEPCNT 127) is refused
// where it is read, naming its flag or configuration key, as any bad value
// is. It used to pass, draw a warning at start and leave the option at Go's
// default (15 s, 9), neither the value asked for nor off.
func TestKeepAliveBounds(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--keepalive-idle", "32767s", "--keepalive-interval", "32767s", "--keepalive-count", "127"},
		{"--client-keepalive-idle", "9h6m7s", "--upstream-keepalive-count", "1"},
		{"--keepalive-idle", "1ms"}, // rounded up to 1 s
	} {
		if _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("sluice %q: %v; want it taken", args, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--keepalive-idle", "32768s"}, `invalid value "32768s" for flag --keepalive-idle: must be 32767s or less`},
		{[]string{"--keepalive-idle", "32767.5s"}, "--keepalive-idle: must be 32767s or less"}, // 32768 once rounded up
		{[]string{"--client-keepalive-idle", "24h"}, "--client-keepalive-idle: must be 32767s or less"},
		{[]string{"--upstream-keepalive-interval", "10h"}, "--upstream-keepalive-interval: must be 32767s or less"},
		{[]string{"--keepalive-count", "128"}, `invalid value "128" for flag --keepalive-count: must be 127 or less`},
		{[]string{"--client-keepalive-count", "1000"}, "--client-keepalive-count: must be 127 or less"},
		{[]string{"--config", writeConfig(t, "keepalive-interval = \"40000s\"\n")}, ":1: keepalive-interval"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sluice %q: %v; want an error with %q", tc.args, err, tc.want)
		}
	}
	code, out, err := runExit(30*time.Second, "--keepalive-count", "1000", "--listen", "127.0.0.1:0", "--listeners", "1")
	if code != 2 || strings.Count(out, "\n") != 0 || !strings.Contains(out, "--keepalive-count") {
		t.Errorf("sluice --keepalive-count 1000: exit %d (%v), stderr:\n%s\nwant exit 2 and one line naming the flag", code, err, out)
	}
}

// TestReplyForHostFirewall: a connect that the host refuses by a rule of
// its own (EPERM: a netfilter drop, a cgroup BPF program; EACCES: a
// prohibit route, a security module), as the dial paths return it, is
// answered 0x02, connection not allowed by ruleset, as sluice's own rules
// are; it was 0x01, general failure. TestHostFirewallReply sends it.
func TestReplyForHostFirewall(t *testing.T) {
	t.Parallel()
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.EACCES} {
		for _, err := range []error{
			&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}, // package net's
			os.NewSyscallError("connect", errno),                                            // tune.DialFd's
		} {
			if got := handshake.ReplyFor(err); got != handshake.NotAllowed {
				t.Errorf("ReplyFor(%v) = %v; want %v", err, got, handshake.NotAllowed)
			}
		}
	}
}

// TestHandOverFailLogsReply: a session whose hand-over to the relay fails
// after its success reply went out (server.handOverErr stands in for an
// EMFILE there) is logged and counted with the reply the client read,
// succeeded, the error, and the bytes it pipelined, which reached the
// target; it was logged and counted as reply none. The client reads a
// reset (it read an EOF). On the bare-socket path and through package net.
func TestHandOverFailLogsReply(t *testing.T) {
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
			refused := error(&os.SyscallError{Syscall: "dup", Err: syscall.EMFILE})
			inst.srv.handOverErr.Store(&refused)
			c := connectPipelined(t, addr, l.Addr().(*net.TCPAddr), []byte("ahead")) // <- 0x00
			up, err := l.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			expect(t, up, []byte("ahead"))
			// A reset, not an EOF, which the client would read as a
			// target that answered nothing and closed.
			if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read %d bytes, %v after the failed hand-over; want ECONNRESET", n, err)
			}
			line := sessionLine(t, &log, c)
			for _, want := range []string{" reply=succeeded ", " up_bytes=5 ", ` err="dup: too many open files"`} {
				if !strings.Contains(line, want) {
					t.Errorf("session whose hand-over failed after 0x00: no %q in\n%s", want, line)
				}
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
		})
	}
}
