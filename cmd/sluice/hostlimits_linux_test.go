package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/handshake"
	"sluice/tune/netnstest"
)

// TestRaiseNoFileLogged: the debug line "RLIMIT_NOFILE raised" comes only
// when the soft limit was below the hard one and sluice raised it; it came
// at every start, though Go raises the limit before main runs. Not
// parallel: it lowers the process's soft limit for a moment.
func TestRaiseNoFileLogged(t *testing.T) {
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		below  uint64 // the soft limit, this far below the hard one
		raised bool
	}{
		{"at the hard limit", 0, false},
		{"below it", 1, true},
	} {
		lim := unix.Rlimit{Cur: orig.Max - tc.below, Max: orig.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		var buf syncBuffer
		topts := cfg.tune
		relayOptions(cfg, &topts, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
		want := fmt.Sprintf(`msg="RLIMIT_NOFILE raised" soft=%d`, orig.Max)
		if got := strings.Contains(buf.String(), want); got != tc.raised {
			t.Errorf("%s: line %q logged: %v, want %v; log:\n%s", tc.name, want, got, tc.raised, buf.String())
		}
	}
}

// TestHostFirewallReply: a CONNECT whose connect(2) the host refuses by a
// rule of its own gets reply 0x02 (connection not allowed by ruleset), as
// one sluice's rules refuse does, where it got 0x01. sluice runs in a
// network namespace whose route to the target is of type prohibit, so
// that connect fails with EACCES. With bare sockets and through package net.
func TestHostFirewallReply(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	ns := fmt.Sprintf("sluice-fw%d", os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	netnstest.IP(t, "-n", ns, "route", "add", "prohibit", "192.0.2.1/32")
	target := handshake.Addr{Type: handshake.AddrIPv4, IP: netip.MustParseAddr("192.0.2.1"), Port: 80}
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			p := spawnSluice(t, []string{"ip", "netns", "exec", ns}, append([]string{"--listeners", "1"}, flags...)...)
			var c *net.TCPConn
			netnstest.In(t, ns, func() (err error) {
				c, err = net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(p.addr)))
				return err
			})
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdConnect, target))
			expect(t, c, []byte{5, 0})
			if rep, _ := readReply(t, c); rep != byte(handshake.NotAllowed) {
				t.Fatalf("CONNECT to a prohibited route: REP %#02x, want %#02x; log:\n%s", rep, byte(handshake.NotAllowed), p.log())
			}
			line, ok := p.waitLine("msg=session", 10*time.Second)
			if !ok || !strings.Contains(line, "reply=not_allowed") || !strings.Contains(line, "permission denied") {
				t.Errorf("access line %q; want reply=not_allowed and the connect's EACCES", line)
			}
		})
	}
}
