package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// startNamed starts sluice with args, --listen names resolved by r, and
// its log in buf. It returns the configuration it started with too.
func startNamed(t *testing.T, r *net.Resolver, buf *syncBuffer, args ...string) (*instance, *config, error) {
	t.Helper()
	cfg, err := parseFlags(append([]string{"--listeners", "1"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = r
	inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(buf, nil)))
	if err == nil {
		t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	}
	return inst, cfg, err
}

// TestListenName: a --listen host name that resolves to 127.0.0.1 and ::1
// listens on both, on one port even when given port 0, and a CONNECT
// through each address reaches the target.
func TestListenName(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	var log syncBuffer
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	inst, _, err := startNamed(t, r, &log, "--listen", "relay.test:0")
	if err != nil {
		t.Fatal(err)
	}
	addrs := inst.addrs()
	if len(addrs) != 2 {
		t.Fatalf("listening on %q, want 127.0.0.1 and [::1]", addrs)
	}
	a, b := netip.MustParseAddrPort(addrs[0]), netip.MustParseAddrPort(addrs[1])
	if a.Addr().Is4() {
		a, b = b, a
	}
	if a.Addr() != netip.IPv6Loopback() || b.Addr() != netip.MustParseAddr("127.0.0.1") || a.Port() != b.Port() {
		t.Fatalf("listening on %q, want 127.0.0.1 and [::1] on one port", addrs)
	}
	if n := strings.Count(log.String(), `msg="sluice listening"`); n != 2 {
		t.Errorf("%d listening lines, want 2:\n%s", n, log.String())
	}
	target := handshake.AddrFromAddrPort(netip.MustParseAddrPort(echo.Addr().String()))
	for _, a := range addrs {
		c, rep := request(t, a, handshake.CmdConnect, target)
		if rep != byte(handshake.Succeeded) {
			t.Fatalf("CONNECT through %s: reply %#x", a, rep)
		}
		mustWrite(t, c, []byte("ping "+a))
		expect(t, c, []byte("ping "+a))
		c.Close()
	}
}

// TestListenNameOpenRelay: a name is checked for an open relay on every
// address it resolved to, and the error names the address.
func TestListenNameOpenRelay(t *testing.T) {
	var log syncBuffer
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("2001:db8::1"))
	_, _, err := startNamed(t, r, &log, "--listen", "relay.test:1080")
	if err == nil || !strings.Contains(err.Error(), "--listen relay.test:1080 ([2001:db8::1]:1080) is not a loopback address") {
		t.Fatalf("start: %v, want the open relay refused naming [2001:db8::1]:1080", err)
	}
}

// TestListenNameSkipsMissing: an address of a name that this host does not
// have is skipped with a warning; when none can be bound, start fails.
func TestListenNameSkipsMissing(t *testing.T) {
	var log syncBuffer
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("2001:db8::1"))
	inst, _, err := startNamed(t, r, &log, "--listen", "relay.test:0", "--allow-open-relay")
	if err != nil {
		t.Fatal(err)
	}
	if addrs := inst.addrs(); len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Errorf("listening on %q, want 127.0.0.1 only", addrs)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "addr=[2001:db8::1]:") {
		t.Errorf("no warning naming [2001:db8::1]:\n%s", log.String())
	}

	r = dualResolver(t, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	if _, _, err := startNamed(t, r, &log, "--listen", "relay.test:0", "--allow-open-relay"); err == nil ||
		!strings.Contains(err.Error(), "--listen relay.test:0: no address of the name can be bound") {
		t.Errorf("start with no address of the host: %v", err)
	}
}

// TestListenNamePortTaken: a port in use on one address of a name stops
// the start, and the address that did bind is closed again. The resolver
// sorts ::1 before 127.0.0.1 (RFC 6724), so ::1 binds first; nothing is
// logged as listening.
func TestListenNamePortTaken(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := netip.MustParseAddrPort(taken.Addr().String()).Port()
	var log syncBuffer
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	given := "relay.test:" + strconv.Itoa(int(port))
	_, _, err = startNamed(t, r, &log, "--listen", given)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(int(port))+": bind: address already in use") {
		t.Fatalf("start: %v, want 127.0.0.1 in use (after ::1 bound)", err)
	}
	if strings.Contains(log.String(), "sluice listening") {
		t.Errorf("a listening line for a start that failed:\n%s", log.String())
	}
	v6 := netip.AddrPortFrom(netip.IPv6Loopback(), port).String()
	l, err := net.Listen("tcp6", v6)
	if err != nil {
		t.Fatalf("%s still taken after the failed start: %v", v6, err)
	}
	l.Close()
}

// TestListenNameReload: a reload checks the addresses the listeners are
// bound to for an open relay, without resolving their host names again
// (here the name is known to the test's resolver only, so resolving it
// again would fail the reload).
func TestListenNameReload(t *testing.T) {
	var log syncBuffer
	r := dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	args := []string{"--listeners", "1", "--listen", "relay.test:0", "--handshake-timeout", "3s"}
	inst, cfg, err := startNamed(t, r, &log, args...)
	if err != nil {
		t.Fatal(err)
	}
	args[len(args)-1] = "4s"
	if got := inst.reload(args, cfg, nil); got == cfg || got.handshakeTimeout != 4*time.Second ||
		!strings.Contains(log.String(), "configuration reloaded") {
		t.Fatalf("reload kept the old configuration:\n%s", log.String())
	}
}

// TestRefuseOpenRelay: the check a reload makes on the running listeners'
// addresses refuses a non-loopback one unless --users or
// --allow-open-relay is given.
func TestRefuseOpenRelay(t *testing.T) {
	bound := []string{"127.0.0.1:1080", "[::1]:1080", "0.0.0.0:1080"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--listen 0.0.0.0:1080 is not a loopback address"},
		{[]string{"--allow-open-relay"}, ""},
		{[]string{"--users", writeConfig(t, "alice:s3cret\n")}, ""},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		err = refuseOpenRelay(cfg, bound)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
		if err := refuseOpenRelay(cfg, bound[:2]); err != nil {
			t.Errorf("%q, loopback only: %v", tc.args, err)
		}
	}
}
